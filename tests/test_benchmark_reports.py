"""The throughput scripts write their own reports (benchmarks/timing.py): the command, one table per run, the
machine; the pages read the machine back (fsslib.docs). Their timings themselves are not tested."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fsslib import docs
from fsslib.provenance import cpu_kind, cpu_model

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their shared helpers (timing.py) by name
import timing  # noqa: E402


def load(name: str):
    """A benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tables(text: str) -> list[list[str]]:
    """The Markdown tables of a report, each as its lines."""
    found, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                found.append(current)
            current.append(line)
        else:
            current = None
    return found


def test_a_report_names_its_command_its_runs_and_the_cpu_that_ran_it(tmp_path):
    """run_tables makes one table per run, headed by its number; write_report ends with the commit and the CPU,
    which the pages read back as its kind."""
    measured = iter(range(4))
    lines = timing.run_tables(2, ["n", "value"], lambda: ([str(i), f"{next(measured)}.0"] for i in range(2)))
    timing.write_report(["# A report", "", f"Made by `{timing.command_line('x.py', ['--runs', '2'])}`.", "", *lines],
                        tmp_path / "benchmarks" / "results" / "x.md")
    text = (tmp_path / "benchmarks" / "results" / "x.md").read_text()
    assert "Made by `python benchmarks/x.py --runs 2`." in text
    assert text.index("Run 1 of 2:") < text.index("Run 2 of 2:")
    assert [table[2:] for table in tables(text)] == [["| 0 | 0.0 |", "| 1 | 1.0 |"], ["| 0 | 2.0 |", "| 1 | 3.0 |"]]
    assert f"device cpu, CPU {cpu_model()}, " in text.splitlines()[-1]
    assert docs.Results(tmp_path).bench_machine("x") == cpu_kind(cpu_model())
    one_run = timing.run_tables(1, ["n"], lambda: iter([["7"]]))
    assert one_run == ["| n |", "|---|", "| 7 |"]  # a single run needs no heading


def test_the_pages_read_the_machine_of_older_reports_and_of_gpu_ones(tmp_path):
    older = ("Produced with torch 2.x; commit abc; device cpu, Intel(R) Xeon(R) Processor (GenuineIntel cpu family 6 "
             "model 167) (this project's 2-core machines; 25% apart from run to run).")
    gpu = ("Produced with torch 2.x; commit abc; device cuda, NVIDIA H200 (143771 MiB), CPU AMD EPYC 9R14 "
           "(AuthenticAMD cpu family 25 model 17), 16 cores (timings: 25% apart from run to run on this project's "
           "machines).")
    untimed = ("Produced with torch 2.x; commit abc; device cpu, CPU AMD EPYC 9R14 (AuthenticAMD cpu family 25 model "
               "17), 2 cores.")
    for name, text in (("old", older), ("gpu", gpu), ("untimed", untimed), ("none", "| a |\n|---|\n| 1 |\n")):
        page = tmp_path / "benchmarks" / "results" / f"{name}.md"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("| a |\n|---|\n| 1 |\n\n" + text + "\n")
    results = docs.Results(tmp_path)
    assert results.bench_machine("old") == "Intel Xeon (family 6 model 167)"
    assert results.bench_machine("gpu") == "NVIDIA H200"
    assert results.bench_machine("untimed") == "AMD EPYC (family 25 model 17)"
    with pytest.raises(docs.FsslibError, match="no provenance line naming its machine"):
        results.bench_machine("none")


@pytest.mark.parametrize(("name", "machine"), [("NVIDIA H200", "h200"), ("NVIDIA H100 80GB HBM3", "h100"),
                                                ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb")])
def test_a_gpu_report_is_named_by_its_gpu(monkeypatch, name, machine):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert timing.default_report("gpu_speed", "cuda") == BENCHMARKS / "results" / f"gpu_speed_{machine}.md"
    assert timing.default_report("gpu_speed", "cpu") is None  # a smoke run on the CPU writes nothing by default
    toy = BENCHMARKS / "results" / "piclip_priors_toy.md"  # a script whose CPU rows are the toy tier's results
    assert timing.default_report("piclip_priors", "cpu", on_cpu="toy") == toy


def test_a_report_without_a_file_is_printed_and_not_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    timing.write_report(["# A smoke run", "", "| a |", "|---|", "| 1 |"], None, timings=False)
    printed = capsys.readouterr().out
    assert "| 1 |" in printed and "not written: give --out" in printed and "25% apart" not in printed
    assert list(tmp_path.iterdir()) == []


def test_the_loader_benchmark_writes_two_runs_of_each_worker_count(tmp_path):
    paper_loader = load("paper_loader")
    out = tmp_path / "loader.md"
    paper_loader.main(["--workers", "0", "--episodes", "2", "--images", "12", "--image-size", "64", "--batch-size",
                       "2", "--out", str(out)])
    text = out.read_text()
    found = tables(text)
    assert len(found) == 3 and all(len(table) == 4 for table in found[:2])
    assert [row.split(" | ")[:2] for row in found[0][2:]] == [["| loader", "0"], ["| device", "0"]]
    assert "cores for PFENet at 2x" in found[0][0]
    assert re.fullmatch(r"\| augment_episode_batch, batches of 2 episodes \| cpu \| [\d.]+ \|", found[2][2])


def test_the_loader_benchmark_reads_the_gpu_step_times_from_a_gpu_speed_report(tmp_path):
    paper_loader = load("paper_loader")
    table = "| method | lever | ms / step |\n|---|---|---|\n"
    runs = [{"pfenet": 20.0, "bam": 30.0, "piclip": 50.0, "hdmnet": 80.0},
            {"pfenet": 40.0, "bam": 34.0, "piclip": 52.0},
            {"pfenet": 30.0, "bam": 20.0, "piclip": 90.0, "hdmnet": 70.0}]
    report = tmp_path / "speed.md"
    report.write_text("\n\n".join(table + "".join(f"| {m} | today | {ms} |\n| {m} | fp32 | 1.0 |\n"
                                                   for m, ms in run.items()) for run in runs))
    assert paper_loader.step_ms(report) == {"PFENet": 30.0, "BAM": 30.0, "PI-CLIP": 52.0, "HDMNet": 75.0}
    report.write_text(table + "| pfenet | today | 20.0 |\n")
    with pytest.raises(SystemExit, match="no `today` row of BAM, PI-CLIP, HDMNet"):
        paper_loader.step_ms(report)
    report.write_text(table + "".join(f"| {m} | today | 20.0 |\n" for m in ("pfenet", "piclip", "hdmnet"))
                      + "| bam | today | nan |\n")
    with pytest.raises(SystemExit, match="`today` row of BAM that timed nothing"):
        paper_loader.step_ms(report)


def test_qgnet_s_loader_benchmark_writes_its_superpixel_and_loader_tables(tmp_path, capsys):
    qgnet_prior_loader = load("qgnet_prior_loader")
    with pytest.raises(SystemExit):
        qgnet_prior_loader.main(["--images", "4", "--batch-size", "8", "--out", str(tmp_path / "q.md")])
    assert "--images 4 makes no batch of 8" in capsys.readouterr().err
    qgnet_prior_loader.main(["--images", "4", "--batch-size", "2", "--workers", "0", "--runs", "1",
                             "--out", str(tmp_path / "q.md")])
    superpixels, loader = tables((tmp_path / "q.md").read_text())
    assert superpixels[2].startswith("| SLIC | ") and loader[2].startswith("| 0 | ")


def test_the_paper_step_benchmark_writes_its_rows_and_refuses_a_diverged_one(monkeypatch, tmp_path):
    paper_train_step = load("paper_train_step")
    finite = {"bf16": True, "fp32": False}
    monkeypatch.setattr(paper_train_step, "random_heads", lambda folder: None)
    monkeypatch.setattr(paper_train_step, "measure", lambda method, batch, shots, bf16, *args: {
        "train_steps_per_s": 2.0, "eval_episodes_per_s": 9.0, "peak_train_mb": float("nan"), "step_flops": 3e12,
        "image_size": 65, "finite_losses": finite["bf16" if bf16 else "fp32"]})
    arguments = ["--device", "cpu", "--methods", "pfenet", "--runs", "2", "--out", str(tmp_path / "p.md")]
    paper_train_step.main([*arguments, "--precisions", "bf16"])
    found = tables((tmp_path / "p.md").read_text())
    row = "| pfenet | 65 | bf16 autocast | 4 | 2.00 | 8.0 | 9.0 | nan | 3.000 | n/a |"
    assert [table[2] for table in found] == [row, row]
    (tmp_path / "p.md").unlink()
    with pytest.raises(SystemExit, match=r"not finite .* pfenet \(fp32\)"):
        paper_train_step.main([*arguments, "--precisions", "fp32"])
    assert not (tmp_path / "p.md").exists()  # a diverged run's times are not a report


def test_an_official_comparison_names_the_checkout_it_ran_and_not_a_repository_around_it(tmp_path):
    """The official checkout's own commit; a copy of its folders inside another repository (fsslib's, say) is
    not a checkout, and must not report the outer repository's commit."""
    import subprocess

    official_speed = load("official_speed")
    checkout, copy = tmp_path / "PFENet", tmp_path / "PFENet" / "copy"
    copy.mkdir(parents=True)
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert official_speed.checkout_commit(checkout) == f"commit {head}"
    assert official_speed.checkout_commit(copy) == "not a git checkout"
    args = SimpleNamespace(shots=1, batch_size=2, image_size=97, steps=2, warmup=0, compile=False, official=copy)
    assert official_speed.setting(args, torch.device("cpu")).endswith("The official checkout: not a git checkout.")


def test_the_priors_benchmark_writes_one_table_per_run(monkeypatch, tmp_path):
    piclip_priors = load("piclip_priors")
    monkeypatch.setattr(piclip_priors.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(piclip_priors, "benchmark", lambda *args: {"batched_eps": 160.0, "per_episode_eps": 64.0,
                                                                   "speedup": 2.5, "peak_mb": 1000.0})
    piclip_priors.main(["--runs", "2", "--out", str(tmp_path / "priors.md")])
    found = tables((tmp_path / "priors.md").read_text())
    assert [table[2] for table in found] == ["| toy-vit @ 64 | cpu | 16 | 1 | 160.0 | 64.0 | 2.5x | 1000 |"] * 2
