"""The machine description benchmarks record: CPU generation and SIMD extensions parsed from /proc/cpuinfo."""

from core.machine import cpu_info, describe_machine

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16

processor\t: 1
cpu family\t: 99
model\t\t: 1
model name\t: other
flags\t\t: fpu amx_tile
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm sve
CPU implementer\t: 0x41
"""


def test_x86_family_model_and_simd_from_the_first_processor():
    assert cpu_info(X86) == {
        "cpu": "AMD EPYC",
        "cpu_family_model": "family 25 model 17",
        "cpu_simd": ["avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"],
    }


def test_arm_features_and_no_family():
    info = cpu_info(ARM)
    assert info["cpu_simd"] == ["asimd", "sve"]
    assert "cpu_family_model" not in info
    assert info["cpu"]  # falls back to the platform's processor / machine name


def test_empty_cpuinfo_still_describes_the_machine():
    assert cpu_info("")["cpu_simd"] == []
    d = describe_machine("numpy", note="x")
    assert {"cpu", "cpu_simd", "cores", "ram_gib", "load_average_at_start", "numpy"} <= d.keys()
    assert d["note"] == "x"


def test_peak_rss_sees_memory_held_only_inside_the_block():
    import numpy as np

    from core.machine import PeakRss, tree_rss

    before = tree_rss()
    with PeakRss(every=0.05) as m:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        block.sum()
        del block
    assert m.peak - before > 250 * 2**20
    assert tree_rss() - before < 100 * 2**20  # released: the peak is not today's reading
