"""What a new user's mistakes get from the terminal: one line saying what was wrong and what to do, before any model
loads, in the commands a first review found loose (webui's address, bench, batch, eval, download, generate)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sigma_studio.model.errors import InputError
from tests.test_cli_input import assert_refused, sigma

SHAPES = str(Path(__file__).resolve().parents[1] / "examples" / "shapes")


@pytest.fixture
def busy_port():
    """A port another program listens on, for the test's length."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_the_server_address_is_checked_before_the_model_loads(busy_port, monkeypatch):
    from sigma_studio.cli.webui import check_address

    for host, port, said in (("127.0.0.1", 0, "is not a port"), ("127.0.0.1", 70000, "is not a port"),
                             ("127.0.0.1", busy_port, f"port {busy_port} is in use")):  # fmt: skip
        with pytest.raises(InputError, match=said):
            check_address(host, port)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    check_address("127.0.0.1", port)  # a free port passes (and is left free)
    check_address("[127.0.0.1]", port)  # brackets, as in a URL, are taken off as the server takes them off

    def unknown(*args, **kwargs):  # a name the resolver does not know (no lookup leaves the test machine)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(InputError, match="'no-such-host' is not an address"):
        check_address("no-such-host", port)


def test_webui_refuses_a_busy_port_or_a_negative_keep_hours_in_one_line(capsys, tmp_path, busy_port):
    out = tmp_path / "web"
    assert_refused(capsys, ["webui", "--model", "shapes", "--port", busy_port, "--out", out], "is in use", tmp_path)
    code, lines, _ = sigma(capsys, "webui", "--model", "shapes", "--keep-hours", "-1")
    assert code == 2 and len(lines) == 1 and "--keep-hours" in lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--suite", "foo", "--device", "cpu"], "--suite 'foo' is not one of modes, layouts"),
        (["--preset", "huge", "--device", "cpu"], "--preset 'huge' is not one of"),
        (["--device", "tpu"], "--device 'tpu' is not one of cuda, cpu"),
        (["--device", "cpu", "--modes", "cpu,gpu"], "--modes 'cpu,gpu': each must be one of"),
        (["--device", "cpu", "--modes", "cpu"], "on the CPU use --preset tiny or shapes"),
        (["--device", "cpu", "--modes", "cpu", "--preset", "tiny", "--out", "{tmp}"], "is a folder"),
    ],
)
def test_bench_refuses_what_names_nothing_before_it_runs(capsys, tmp_path, args, said):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_refused(capsys, ["bench", *args], said, tmp_path)


def test_bench_on_cuda_without_a_gpu_says_how_to_run_on_the_cpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert_refused(capsys, ["bench", "--out", tmp_path / "b.json"], "--device cpu --modes cpu", tmp_path)


def test_batch_refuses_a_file_that_is_not_parquet_and_a_size_the_model_cannot_make(capsys, tmp_path):
    notes = tmp_path / "rows.parquet"
    notes.write_text("prompt,image\n")
    assert_refused(capsys, ["batch", notes, "--out", tmp_path / "b"], "is not a parquet file", tmp_path)
    from sigma_studio.model.shapes.tasks import make_world

    make_world(tmp_path / "w", 10, 2, 0)
    rows = tmp_path / "w" / "eval" / "compose.parquet"
    args = ["batch", rows, "--out", tmp_path / "b", "--model", "shapes", "--size", "1024x1024"]
    assert_refused(capsys, args, "over this model's limit", tmp_path)


def test_eval_of_a_missing_folder_says_so_first(capsys, tmp_path):
    code, lines, _ = sigma(capsys, "eval", tmp_path / "nowhere")
    assert code == 2 and lines == [f"error: {tmp_path / 'nowhere'} is not a folder: give the --out folder of a "
                                   "`sigma batch` run"]  # fmt: skip


def test_metrics_sharing_a_missing_model_say_so_in_one_line():
    from sigma_studio.cli.evaluate import by_reason

    lines = ["clip_t: The CLIP model: missing", "dino: The DINO model: missing", "clip_i: The CLIP model: missing"]
    assert by_reason(lines) == ["clip_t, clip_i: The CLIP model: missing", "dino: The DINO model: missing"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["a", "red", "star"], 'quote the prompt: sigma generate "a red ..."'),
        ([f"{SHAPES}/blue-circle.png", "a <subject>shape <img1>"], "looks like a prompt, not an image file"),
        (["a <img1>", "-i", "img1="], "names no file after '='"),
        (["a <img1>", SHAPES], "is a folder, not an image file"),
        (["a <img1>", f"{SHAPES}/blue-circle.png", "--out", "{tmp}/x.jpg"], "results are PNG files"),
        (["--from", "{tmp}", "x"], "is a folder: name a PNG"),
    ],
)
def test_generate_explains_the_usual_slips(capsys, tmp_path, args, said):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_refused(capsys, ["generate", *args, "--model", "shapes"], said, tmp_path)


def test_download_says_what_it_does_not_fetch(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, out = sigma(capsys, "download", "tiny")
    assert code in (0, None) and "nothing to download" in out
    args = ["download", "--depth-model", "foo/bar", "--cache-dir", tmp_path]
    assert_refused(capsys, args, "--depth-model is an option of `sigma download depth`", tmp_path)
    code, lines, _ = sigma(capsys, "download", "bagel", "--cache-dir", tmp_path)
    assert code != 0 and len(lines) == 1 and "`sigma download bagel`" in lines[0]


def test_every_command_takes_h_for_help(capsys):
    for command in (["generate"], ["shapes", "make"], []):
        code, _, out = sigma(capsys, *command, "-h")
        assert code in (0, None) and "Usage: sigma" in out


def test_shapes_make_never_leaves_another_worlds_family_beside_its_own(capsys, tmp_path):
    world = tmp_path / "w"
    code, _, _ = sigma(capsys, "shapes", "make", "--out", world, "--rows", 10, "--eval-rows", 2, "--find-rows", 4)
    assert code in (0, None) and (world / "train" / "find.parquet").is_file()
    keep = world / "train" / "notes.txt"
    keep.write_text("not the world's")
    assert_refused(capsys, ["shapes", "make", "--out", world, "--rows", 10, "--eval-rows", 2], "--overwrite", tmp_path)
    refused = ["shapes", "make", "--out", world, "--overwrite", "--shades", "1.5"]
    assert_refused(capsys, refused, "shades 1.5", tmp_path)  # a refused run removes nothing
    code, _, _ = sigma(capsys, "shapes", "make", "--out", world, "--rows", 10, "--eval-rows", 2, "--overwrite")
    assert code in (0, None) and not (world / "train" / "find.parquet").exists() and keep.is_file()
    assert (world / "train" / "compose.parquet").is_file() and (world / "world.json").is_file()
    shards = tmp_path / "snapshot"  # a dataset's folder, not a world: its parquet files are not the world's to remove
    (shards / "train").mkdir(parents=True)
    (shards / "train" / "0000.parquet").write_bytes(b"PAR1")
    code, _, _ = sigma(capsys, "shapes", "make", "--out", shards, "--rows", 10, "--eval-rows", 2)
    assert code in (0, None) and (shards / "train" / "0000.parquet").is_file()


def test_help_paragraphs_wrap_at_the_terminal_width_and_examples_keep_their_lines():
    from sigma_studio.cli.render import unwrapped

    doc = "One line\nand its rest.\n\nExit codes: 0 done (with\n--benchmark too),\n2 bad input.\n\n"
    doc += "[b]Examples[/]\n\n  sigma a\n  sigma b"
    doc += "\n\n- one\n- two"
    assert unwrapped(doc) == ("One line and its rest.\n\nExit codes: 0 done (with --benchmark too), 2 bad input.\n\n"
                              "[b]Examples[/]\n\n"
                              "  sigma a\n  sigma b\n\n- one\n- two")  # fmt: skip
