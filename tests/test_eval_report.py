import csv
import json

import pytest

from m2n2_core.evaluation.report import main


def _csv(path, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "sample", "noc85", "noc90", "noc95", "prepare_s", "mean_click_s", "iou1", "iou2", "iou3"])
        w.writerows(rows)


def test_report_compares_methods_on_the_samples_all_of_them_finished(tmp_path, capsys):
    _csv(tmp_path / "a.csv", [["m2n2", "s0", 1, 1, 3, 2.0, 0.5, 0.9, 0.93, 0.96],
                              ["m2n2", "s1", 3, 3, 3, 2.0, 0.7, 0.2, 0.5, 0.6]])
    _csv(tmp_path / "b.csv", [["grabcut", "s1", 2, 3, 3, 0.0, 1.0, 0.5, 0.86, 0.88]])
    _csv(tmp_path / "c.csv", [["grabcut", "s0", 3, 3, 3, 0.0, 3.0, 0.1, 0.2, 0.3]])  # the same run, split in two
    assert main([str(tmp_path / "out"), str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), str(tmp_path / "c.csv"),
                 "--label", "m2n2=M2N2 (affinity)"]) == 0
    runs = {r["method"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]}
    assert runs["m2n2"]["count"] == runs["grabcut"]["count"] == 2
    assert runs["m2n2"]["noc90"] == pytest.approx((1 + 3) / 2) and runs["m2n2"]["nof90"] == 1
    assert runs["grabcut"]["noc85"] == pytest.approx((2 + 3) / 2) and runs["grabcut"]["miou"][0] == pytest.approx(0.3)
    assert runs["grabcut"]["seconds_per_click"] == pytest.approx(2.0)
    assert (tmp_path / "out" / "miou.png").is_file()
    table = capsys.readouterr().out
    assert "| grabcut | 2 | 2.50 | 3.00 |" in table and "| M2N2 (affinity) | 2 | 2.00 | 2.00 |" in table


def test_report_without_common_samples_is_a_clear_error(tmp_path, capsys):
    _csv(tmp_path / "a.csv", [["m2n2", "s0", 1, 1, 1, 0, 0, 0.9, 0.9, 0.9]])
    _csv(tmp_path / "b.csv", [["grabcut", "s1", 1, 1, 1, 0, 0, 0.9, 0.9, 0.9]])
    assert main([str(tmp_path / "out"), str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 2
    assert "no sample was finished by every method" in capsys.readouterr().err
    assert main([str(tmp_path / "out"), str(tmp_path / "missing")]) == 2


def test_report_takes_attention_settings_from_a_run_folders_summary(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _csv(run / "per_sample.csv", [["m2n2", "s0", 1, 1, 1, 0, 0, 0.9, 0.9, 0.96]])
    (run / "summary.json").write_text(json.dumps({"method": "m2n2", "attention": "affinity",
                                                  "attention_resolution": 64, "description": "affinity(r=64)"}))
    assert main([str(tmp_path / "out"), str(run)]) == 0
    (only,) = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    assert (only["attention"], only["attention_resolution"], only["count"]) == ("affinity", 64, 1)
