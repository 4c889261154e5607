"""tools/gpu_check_pytest.py, the pytest plugin of the GPU check, on a throw-away test tree."""

import os
import subprocess
import sys
import textwrap

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")


def run_pytest(tree, *args, seconds=None):
    env = dict(os.environ, PYTHONPATH=TOOLS)
    env.pop("GPU_CHECK_PYTEST_SECONDS", None)
    if seconds is not None:
        env["GPU_CHECK_PYTEST_SECONDS"] = str(seconds)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "gpu_check_pytest", "-p", "no:cacheprovider", *args],
        cwd=tree, capture_output=True, text=True, env=env, timeout=120,
    )


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    cuda: needs a GPU\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.fixture(params=["cpu", "cuda"])
        def device(request):
            return request.param
    """))
    (tmp_path / "maskzoo").mkdir()
    model_test = "import pytest\n\n@pytest.mark.cuda\ndef test_model():\n    pass\n"
    (tmp_path / "maskzoo" / "test_model.py").write_text(model_test)
    (tmp_path / "test_op.py").write_text(textwrap.dedent("""
        import time

        def test_kernel(device):
            time.sleep(0.5)

        def test_cpu_only():
            pass
    """))
    return tmp_path


def test_cuda_parameter_is_selected_by_the_marker_and_model_tests_run_last(tree):
    done = run_pytest(tree, "-m", "cuda", "--collect-only", "-q")
    lines = [line for line in done.stdout.splitlines() if "::" in line]
    assert lines == ["test_op.py::test_kernel[cuda]", "maskzoo/test_model.py::test_model"], done.stdout


def test_time_limit_stops_between_tests_and_the_junit_xml_is_still_written(tree):
    done = run_pytest(tree, "-rA", "--junitxml=out.xml", seconds=0.1)
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout
    assert "the tests' time limit (0.1 s) was reached" in done.stdout
    assert "1 passed" in done.stdout
    assert (tree / "out.xml").exists()
