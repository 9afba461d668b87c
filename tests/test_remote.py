"""A DVC remote round trip against a real S3-compatible server on 127.0.0.1.

moto's server mode (`ThreadedMotoServer`) serves the S3 API over HTTP in this
process; DVC reaches it through `dvc-s3` like any S3-compatible store (AWS, MinIO,
R2...): `dvc remote add -d storage s3://...` plus `endpointurl`, with the
credentials in the environment only. In a temporary git + DVC repository holding
the project with the reduced params, its DAG cut to `prepare` and `base` (see
`two_stage_project`), `dvc repro` makes real prompt pools and a real pretrained model
folder in seconds, then:

- `dvc push`; wipes the DVC cache and the outputs; `dvc pull`: `dvc status` is clean
  and every output file has the bytes (md5) it had before the push;
- `dvc exp run -S prepare.seed=3` of one experiment, `dvc exp push origin <exp>` to a
  local bare git repository; in a second clone, `dvc exp pull origin <exp>` and
  `dvc exp apply`: the experiment's params and its outputs (through the S3 remote,
  the clone starts with an empty cache) arrive byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline import dvc, git, new_repo, ran

boto3 = pytest.importorskip("boto3", reason="the dev extra installs boto3 (with dvc-s3)")
moto_server = pytest.importorskip("moto.server", reason="the dev extra installs moto[server]")
pytest.importorskip("dvc_s3", reason="the dev extra installs dvc-s3")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BUCKET = "honing-remote"
STAGES = ["prepare", "base"]
BASE_STEPS = {"solution_steps": 10, "check_steps": 10, "warmup_steps": 2}  # a real model folder, fast
# Throwaway credentials: moto accepts any; they travel in the environment only.
ACCESS_KEY, SECRET_KEY = "honing-test-key-id", "honing-test-secret-key"
TIMEOUT = 300  # seconds for one dvc/git command on 2 busy cores


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free port of 127.0.0.1 with one empty bucket."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def remote_env(env: dict, home: Path) -> dict:
    """`env` with the S3 credentials and no AWS config of the machine's user."""
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),          # absent: nothing read
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    return env


def two_stage_project(repo: Path) -> None:
    """Cut the copy's DAG to its first two stages, verbatim, with a shorter pretraining.

    DVC acts on the whole project: with stages that never ran, an untargeted
    `dvc pull` and `dvc exp apply` fail ("Checkout failed ... Is your cache up to
    date?"), and the committed dvc.lock records the default run, whose data no remote
    here holds. Two stages that have all run keep every command untargeted, as a user
    types them."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {name: spec["stages"][name] for name in STAGES}}, sort_keys=False))
    (repo / "dvc.lock").unlink()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["base"].update(BASE_STEPS)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def cached_outs(repo: Path, stages: list[str]) -> list[str]:
    """The outputs dvc.yaml caches for these stages (metrics and plots are `cache: false`)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    outs = [out for stage in stages for out in spec[stage]["outs"]]
    assert all(isinstance(out, str) for out in outs), outs
    return outs


def file_md5s(repo: Path, outs: list[str]) -> dict[str, str]:
    """path -> md5 of every file under the given outputs (files or folders)."""
    digests = {}
    for out in outs:
        root = repo / out
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digests[str(path.relative_to(repo))] = hashlib.md5(path.read_bytes()).hexdigest()
    return digests


def remote_objects(client) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def current_branch(repo: Path, env: dict) -> str:
    return git(repo, "rev-parse", "--abbrev-ref", "HEAD", env=env).stdout.strip()


def test_push_wipe_pull_and_an_experiment_through_an_s3_remote(s3_endpoint, tmp_path):
    endpoint, client = s3_endpoint
    started = time.monotonic()
    repo, env, _ = new_repo(tmp_path / "repo", tmp_path / "honing-cache")
    env = remote_env(env, tmp_path)
    two_stage_project(repo)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", "the project cut to prepare and base, not run yet", env=env)

    # The remotes: S3 for data (endpoint in .dvc/config, credentials not), a bare git repo.
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin), env=env)
    git(repo, "remote", "add", "origin", str(origin), env=env)
    dvc(repo, "remote", "add", "-d", "storage", f"s3://{BUCKET}/store", env=env, timeout=TIMEOUT)
    dvc(repo, "remote", "modify", "storage", "endpointurl", endpoint, env=env, timeout=TIMEOUT)
    config = (repo / ".dvc" / "config").read_text()
    assert endpoint in config and f"s3://{BUCKET}/store" in config
    assert ACCESS_KEY not in config and SECRET_KEY not in config
    assert not (repo / ".dvc" / "config.local").exists()

    # A real run of a small part of the DAG: prompt pools and a pretrained model folder.
    dvc(repo, "repro", env=env, timeout=TIMEOUT)
    outs = cached_outs(repo, STAGES)
    before = file_md5s(repo, outs)
    assert any(name.endswith(".parquet") for name in before)
    assert any(name.endswith("model.safetensors") for name in before)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", "prepare and base, an S3 remote", env=env)
    branch = current_branch(repo, env)
    git(repo, "push", "-q", "origin", branch, env=env)

    # Push, wipe the cache and the outputs, pull: the same bytes, nothing stale.
    assert remote_objects(client) == []
    dvc(repo, "push", env=env, timeout=TIMEOUT)
    pushed = remote_objects(client)
    assert pushed and all(key.startswith("store/files/md5/") for key in pushed)
    cloud = dvc(repo, "status", "--cloud", env=env, timeout=TIMEOUT).stdout
    assert "in sync" in cloud, cloud

    shutil.rmtree(repo / ".dvc" / "cache")
    for out in outs:
        shutil.rmtree(repo / out) if (repo / out).is_dir() else (repo / out).unlink()
    assert file_md5s(repo, outs) == {}
    dvc(repo, "pull", env=env, timeout=TIMEOUT)
    assert file_md5s(repo, outs) == before
    status = dvc(repo, "status", env=env, timeout=TIMEOUT).stdout
    assert "up to date" in status, status
    assert (repo / ".dvc" / "cache").is_dir()  # pull filled the cache again

    # One experiment: a changed seed reruns prepare only and gives other prompt pools.
    result = dvc(repo, "exp", "run", "-n", "seed3", "-S", "prepare.seed=3", env=env, timeout=TIMEOUT)
    assert ran(result) == ["prepare"]
    exp_files = file_md5s(repo, outs)
    changed = {name for name in exp_files if exp_files[name] != before.get(name)}
    assert changed and all(name.startswith("data/prepare/") for name in changed), changed
    dvc(repo, "exp", "push", "origin", "seed3", env=env, timeout=TIMEOUT)
    assert set(remote_objects(client)) > set(pushed), "exp push sent no data to the S3 remote"

    # A second clone with an empty cache: exp pull brings the params from git and the
    # outputs from S3; exp apply puts them in the workspace.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--branch", branch, str(origin), str(clone), env=env)
    assert not (clone / ".dvc" / "cache").exists()
    assert not (clone / "data" / "prepare").exists()
    dvc(clone, "exp", "pull", "origin", "seed3", env=env, timeout=TIMEOUT)
    shown = json.loads(dvc(clone, "exp", "show", "--json", env=env, timeout=TIMEOUT).stdout)
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    (exp,) = [e for e in experiments if e.get("name") == "seed3"]
    exp_params = exp["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert exp_params["prepare"]["seed"] == 3

    dvc(clone, "exp", "apply", "seed3", env=env, timeout=TIMEOUT)
    assert yaml.safe_load((clone / "params.yaml").read_text())["prepare"]["seed"] == 3
    assert file_md5s(clone, outs) == exp_files
    status = dvc(clone, "status", env=env, timeout=TIMEOUT).stdout
    assert "up to date" in status, status
    print(f"\nS3 remote round trip: {time.monotonic() - started:.0f} s")
