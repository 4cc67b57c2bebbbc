"""One module per reproduced paper. Each exposes `run(paper, scale, stages, data_dir, seed, out, device)`,
returning an `Outcome` (measurements by claim id, figure file names, extra report tables), and
`deviations(scale_name, scale)`."""

from advx.papers import gilmer2018, goodfellow2015, ilyas2019

PAPERS = {"goodfellow2015": goodfellow2015, "gilmer2018": gilmer2018, "ilyas2019": ilyas2019}
