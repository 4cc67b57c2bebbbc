"""One module per reproduced paper, and the registry. Each module holds its `Config` (the paper's constants and
a `scales` dict of `Scale`: the schema conf/paper/<name>.yaml fills), `run(paper, scale, stages, data_dir, seed,
out, device) -> claims.Outcome` (measurements by claim id, figure file names, extra report tables), and
`deviations(scale_name, scale)`. A new paper adds its module, conf/paper/<name>.yaml, experiments/<name>/paper.yaml
and one line here."""

from advx.papers import gilmer2018, goodfellow2015, ilyas2019, li2023

PAPERS = {"goodfellow2015": goodfellow2015, "gilmer2018": gilmer2018, "ilyas2019": ilyas2019, "li2023": li2023}
