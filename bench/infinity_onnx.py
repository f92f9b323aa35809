"""Run inside Infinity's own virtual environment with `python -I` (never imported by bitpatch;
-I keeps bench/ off the path, whose profile.py would shadow the standard library's).

`python infinity_onnx.py export OUT FOLDER...`: each exported HF classification folder to an
ONNX folder OUT/<name> (optimum's exporter, one process for all of them).
`python infinity_onnx.py serve ARGS...`: `infinity_emb ARGS...` with two work-arounds for
infinity-emb 0.0.78 on optimum 2.x, so its ONNX engine (`--engine optimum`) serves local folders
at its best: its optimum classifier passes the ONNX file as a path where optimum compares file
names (every local folder fails to load), and its graph optimizer passes a keyword that
optimum 2.x's OptimizationConfig no longer takes (the optimization is skipped).
"""

import sys
from pathlib import Path


def export(out: str, folders: list[str]) -> None:
    """optimum's ONNX export (task text-classification) of each folder."""
    from optimum.exporters.onnx import main_export

    for folder in folders:
        main_export(folder, Path(out) / Path(folder).name, task="text-classification")


def serve(args: list[str]) -> int:
    """Infinity's CLI with the two work-arounds in place."""
    import infinity_emb.transformer.classifier.optimum as classifier
    import infinity_emb.transformer.utils_optimum as utils
    from infinity_emb.cli import cli

    found, config = classifier.get_onnx_files, utils.OptimizationConfig
    classifier.get_onnx_files = lambda **kw: Path(found(**kw).name)

    def optimization_config(**kw):
        kw.pop("optimize_with_onnxruntime_only", None)
        return config(**kw)

    utils.OptimizationConfig = optimization_config
    sys.argv = ["infinity_emb", *args]
    return cli()


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(serve(sys.argv[2:]))
