"""The data-amount study's table, gaps and plot from saved run summaries."""

from __future__ import annotations

import json

from bitpatch.trainer.data_amount import load_cells, main, missing, table
from bitpatch.trainer.results import load_runs


def save(folder, name, **run):
    base = {"bias_terms": "all", "epochs": 16.0, "kind": "classification", "seed": 0}
    (folder / f"{name}.json").write_text(json.dumps({**base, **run}))


def test_fractions_make_columns_and_stay_out_of_the_main_table(tmp_path):
    for seed, f1 in enumerate((80.0, 82.0)):
        save(
            tmp_path,
            f"m-b-10-{seed}",
            task="mrpc",
            method="bitfit",
            seed=seed,
            train_fraction=0.1,
            metrics={"f1": f1},
        )
    save(tmp_path, "m-b-100", task="mrpc", method="bitfit", metrics={"f1": 86.0})
    save(tmp_path, "m-f-30", task="mrpc", method="full", train_fraction=0.3, metrics={"f1": 84.0})
    save(tmp_path, "m-b-3ep", task="mrpc", method="bitfit", epochs=3.0, metrics={"f1": 1.0})
    save(tmp_path, "emb", task="stsb", method="bitfit", kind="embedding", metrics={"spearman": 1.0})
    cells = load_cells(tmp_path)
    text = table(cells)
    assert "| mrpc | BitFit | 81.0 ± 1.4 (n=2) | - | 86.0 ± 0.0 (n=1) |" in text
    assert "| mrpc | Full-FT | - | 84.0 ± 0.0 (n=1) | - |" in text
    assert "| stsb | BitFit | - | - | - |" in text  # the embedding run is not this study
    assert "mrpc bitfit 10%: 2/3" in missing(cells)
    main_table = load_runs(tmp_path)  # the 100% and 3-epoch runs only
    assert sorted(len(v) for v in main_table.values()) == [1, 1]


def test_main_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    save(tmp_path, "c", task="cola", method="full", train_fraction=0.1, metrics={"mcc": 20.0})
    main([str(tmp_path), "--plot", str(tmp_path / "p.png")])
    assert "| cola | Full-FT | 20.0 ± 0.0 (n=1) |" in capsys.readouterr().out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_update_replaces_only_the_marked_text(tmp_path):
    save(tmp_path, "c", task="cola", method="bitfit", train_fraction=0.3, metrics={"mcc": 9.0})
    doc = tmp_path / "RESULTS.md"
    doc.write_text("intro\n<!-- data-amount:start -->\nold\n<!-- data-amount:end -->\nafter\n")
    main([str(tmp_path), "--update", str(doc)])
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
    assert "| cola | BitFit | - | 9.0 ± 0.0 (n=1) | - |" in text
