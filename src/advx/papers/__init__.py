"""One module per reproduced paper. Each exposes `run(paper, scale, stages, data_dir, seed, out, device)`,
returning the measurements by claim id and the figure file names, and `deviations(scale_name, scale)`."""

from advx.papers import gilmer2018, goodfellow2015

PAPERS = {"goodfellow2015": goodfellow2015, "gilmer2018": gilmer2018}
