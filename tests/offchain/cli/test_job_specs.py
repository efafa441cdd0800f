"""Job specs on the command line: `command` as one string in a spec file, `gpuex rent --image IMAGE -- CMD ARGS...`
without one, and what either refuses."""

from __future__ import annotations

import json

from offchain.agent.jobspec import JobSpec
from offchain.ops.devnet import spec_dir


def saved_spec(cli, spec_hash: str) -> JobSpec:
    return JobSpec.model_validate_json((spec_dir(cli.state_dir) / f"{spec_hash}.json").read_bytes())


def rent_and_cancel(cli, market, *spec_args: str, env: dict[str, str] | None = None) -> dict:
    """Rents the market's offer with `spec_args`, cancels the rental, and returns what `rent --json` printed."""
    rented = cli.ok(
        "rent", market.offer_id, "--duration", "1m", "--approve", "--json", *spec_args, role="renter", env=env
    )
    assert rented.err == ""  # the market's provider has its agent key set: no warning
    result = rented.json()
    cli.ok("rental", "terminate", result["rental"]["rental_id"], role="renter")
    return result


def test_rent_with_an_image_and_a_command_needs_no_spec_file(cli, market):
    hostile = "echo $(id) `id`; rm -rf / && cat /etc/passwd > /workspace/out"
    result = rent_and_cancel(
        cli, market, "--image", "busybox:1.36", "--env", "MODE=a=b c", "--", "sh", "-c", hostile, "--not-an-option"
    )
    spec = saved_spec(cli, result["rental"]["job_spec_hash"])
    assert spec == JobSpec(
        image="busybox:1.36", command=("sh", "-c", hostile, "--not-an-option"), env={"MODE": "a=b c"}
    )
    assert result["rental"]["job_spec_hash"] == "0x" + spec.spec_hash().hex()


def test_a_spec_file_command_as_a_string_is_split_like_a_shell(cli, market, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"command": "python train.py --name 'run 1' $HOME; id", "image": "busybox"}))
    result = rent_and_cancel(cli, market, "--spec", path)
    spec = saved_spec(cli, result["rental"]["job_spec_hash"])
    assert spec.command == ("python", "train.py", "--name", "run 1", "$HOME;", "id")


def test_a_spec_file_without_a_command_says_so(cli, market, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"image": "busybox", "args": ["x"]}))
    error = cli.fails(2, "rent", market.offer_id, "--duration", "1m", "--spec", path, role="renter")
    assert error == (
        f"bad job spec {path}: command: missing (the program and its arguments: a list, or one string split like a "
        "shell)"
    )


def test_a_command_string_that_cannot_be_split_is_refused(cli, market, tmp_path):
    path = tmp_path / "job.json"
    for command, reason in (("echo 'unbalanced", "No closing quotation"), ("   ", "the command line is empty")):
        path.write_text(json.dumps({"command": command}))
        error = cli.fails(2, "rent", market.offer_id, "--duration", "1m", "--spec", path, role="renter")
        assert error.startswith(f"bad job spec {path}: command: ") and reason in error


def test_image_and_spec_file_exclude_each_other(cli, market, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"command": ["true"]}))
    rent = ("rent", market.offer_id, "--duration", "1m")
    error = cli.fails(2, *rent, "--spec", path, "--image", "busybox", "--", "true", role="renter")
    assert "argument --image: not allowed with argument --spec" in error
    assert cli.fails(2, *rent, "--spec", path, "--", "true", role="renter") == (
        "a command after `--` goes with --image; a spec file (--spec) holds its own command and env"
    )
    assert cli.fails(2, *rent, "--spec", path, "--env", "A=1", role="renter").startswith("--env goes with --image")
    assert "one of the arguments --spec --image is required" in cli.fails(2, *rent, "--", "true", role="renter")


def test_an_image_without_a_command_is_refused(cli, market):
    rent = ("rent", market.offer_id, "--duration", "1m", "--image", "busybox")
    for empty in ((), ("--",)):
        assert cli.fails(2, *rent, *empty, role="renter").startswith("--image needs the job's command after `--`")
    assert cli.fails(2, *rent, "--", "", role="renter") == "bad job: command: the command's program is empty"


def test_hostile_image_and_env_are_refused_before_anything_is_sent(cli, market):
    rent = ("rent", market.offer_id, "--duration", "1m")
    for option_like in ("--privileged", "-v=/:/host"):
        error = cli.fails(2, *rent, "--image", option_like, "--", "sh", role="renter")
        assert error.startswith("argument --image: expected one argument")
    error = cli.fails(2, *rent, "--image", "Ubuntu", "--", "sh", role="renter")
    assert error.startswith("bad job: image: not an image reference")
    error = cli.fails(2, *rent, "--image", "busybox", "--env", "LD_PRELOAD=/x.so", "--", "sh", role="renter")
    assert error.startswith("bad job: env: environment variable LD_PRELOAD is reserved")
    assert "not NAME=VALUE" in cli.fails(2, *rent, "--image", "busybox", "--env", "NOVALUE", "--", "sh", role="renter")


def test_nothing_after_the_separator_for_a_command_without_a_job(cli):
    assert cli.fails(2, "offers", "search", "--", "x").startswith("this command takes nothing after `--`: x")


def test_send_spec_takes_the_same_spec_options(cli, market):
    assert cli.fails(2, "rental", "send-spec", 1, "--image", "busybox", role="renter").startswith(
        "--image needs the job's command after `--`"
    )
    for command in (("rent",), ("rental", "send-spec")):
        assert "[-- CMD [ARG ...]]" in cli.ok(*command, "--help").out
