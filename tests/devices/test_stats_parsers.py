"""Parsing benchmark tools' output, and the statistics over trials."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.devices import stats
from mdeploy.devices.android import benchmark_model_argv
from mdeploy.devices.parsers import BenchOutputError, parse_benchmark_model, parse_mace_run

REAL_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/mdeploy/0123456789abcdef/cpm_fp16.tflite]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/mdeploy/0123456789abcdef/cpm_fp16.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 1.27
INFO: Initialized session in 4.914ms.
INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=1157 curr=812 min=801 max=1157 avg=894.2 std=134

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=801 curr=790 min=740 max=1034 avg=796.409 std=21

INFO: Inference timings in us: Init: 4914, First inference: 1157, Warmup (avg): 1157.14, Inference (avg): 796.409
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your one's own risk.
INFO: Memory footprint delta from the start of the tool (MB): init=3.1875 overall=6.28125
INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.5
"""


def test_benchmark_model_output_is_read_in_milliseconds():
    parsed = parse_benchmark_model(REAL_OUTPUT)
    assert parsed["avg_ms"] == pytest.approx(0.796409)
    assert parsed["init_ms"] == pytest.approx(4.914) and parsed["first_ms"] == pytest.approx(1.157)
    assert parsed["warmup_avg_ms"] == pytest.approx(1.15714)
    assert parsed["count"] == 50 and parsed["min_ms"] == pytest.approx(0.740) and parsed["std_ms"] == pytest.approx(0.021)
    assert parsed["memory_overall_mb"] == pytest.approx(6.28125) and parsed["peak_memory_mb"] == pytest.approx(9.5)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Segmentation fault",
        REAL_OUTPUT.replace("Inference timings in us", "Inference timings in ms"),
        REAL_OUTPUT.replace("Inference (avg): 796.409", "Inference (avg): 0"),
        "INFO: Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): garbage",
    ],
)
def test_anything_else_is_not_a_measurement(text):
    with pytest.raises(BenchOutputError):
        parse_benchmark_model(text)


def test_mace_run_time_line_in_both_layouts():
    new = "========\n     capability(CPU)        init      warmup     run_avg\n========\ntime          12.345      80.125      20.500      15.250\n"
    old = "            init      warmup     run_avg\ntime      80.125      20.500      15.250\n"
    for text in (new, old):
        assert parse_mace_run(text) == {"init_ms": 80.125, "first_ms": 20.5, "avg_ms": 15.25}
    with pytest.raises(BenchOutputError):
        parse_mace_run("Open input file failed\n")


def test_benchmark_model_command_line():
    argv = benchmark_model_argv("/data/local/tmp/bm", "/data/local/tmp/m.tflite", threads=4, delegate="gpu", warmup=5, runs=50)
    assert argv[0] == "/data/local/tmp/bm"
    for expected in ("--graph=/data/local/tmp/m.tflite", "--num_threads=4", "--use_gpu=true", "--warmup_runs=5",
                     "--num_runs=50", "--min_secs=0", "--warmup_min_secs=0", "--report_peak_memory_footprint=true"):
        assert expected in argv


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 50, 101):
        values = rng.gamma(2.0, 3.0, n).tolist()
        for q in (0, 10, 50, 90, 99, 100):
            assert stats.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_summary_over_runs_and_over_trial_averages():
    s = stats.summarize([[10.0, 11.0, 12.0], [10.5, 11.5, 30.0]])
    assert s["median_ms"] == pytest.approx(11.25) and s["samples"] == 6
    assert s["p90_ms"] == pytest.approx(np.percentile([10, 11, 12, 10.5, 11.5, 30], 90))
    assert s["trial_medians_ms"] == [11.0, 11.5]
    assert s["spread_pct"] == pytest.approx(0.5 / 11.25 * 100, rel=1e-3)
    a = stats.summarize_averages([20.0, 22.0, 21.0])
    assert a["median_ms"] == 21.0 and a["basis"] == "trial averages" and a["spread_pct"] == pytest.approx(2 / 21 * 100, rel=1e-3)


def test_significance_respects_the_spread():
    steady = {"median_ms": 10.0, "spread_pct": 1.0}
    noisy = {"median_ms": 10.8, "spread_pct": 12.0}
    assert stats.significant(steady, {"median_ms": 11.0, "spread_pct": 1.0})  # 10% with 1% spread
    assert not stats.significant(steady, noisy)  # 8% inside a 12% spread
    assert not stats.significant(steady, {"median_ms": 10.1, "spread_pct": 0.0})  # under the 2% floor


def test_throttling_reasons():
    before = {"cpu_max_freq_khz": 2_000_000, "cpu_temp_c": 40.0}
    assert stats.throttling(before, dict(before), [10.0, 10.1, 10.0]) == []
    reasons = stats.throttling(before, {"cpu_max_freq_khz": 1_200_000, "cpu_temp_c": 55.0, "thermal_status": 3}, [10.0, 11.5, 13.0])
    assert len(reasons) == 4
    assert any("2000 to 1200 MHz" in r for r in reasons) and any("rose 15 C" in r for r in reasons)
    assert stats.throttling({}, {}, [0.02, 0.03, 0.04]) == []  # tiny models: noise, not heat
