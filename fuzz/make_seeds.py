#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz corpora: fuzz/corpus/<target>/seed-<what>.

The seeds are real inputs taken from the repository (job files in examples/ and tests/spec, the
request bodies of docs/protocol.md, the metrics lines of tests/metrics, the shim files of
tests/executors/shim) and hostile ones written here (archives that climb out with `..`, absolute
paths, links and hard links, huge declared sizes; deep nesting; numbers no double holds). They are
named, so that a reviewer sees what each is for, and bench/fuzz keeps every named file when it
minimizes a corpus: only what the fuzzer found (files named by their SHA-1) is merged again.

Running it again rewrites the same files with the same bytes (archives carry fixed times).
"""

import gzip
import io
import re
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / f"seed-{name}").write_bytes(data)


# ---- job_spec: the first byte picks job.yml (0), job.json (1) or x.runconfig (2) ----

YML, JSON, RUNCONFIG = b"\x00", b"\x01", b"\x02"


def job_seeds():
    write("job_spec", "example-hello.yml", YML + (ROOT / "examples/hello/job.yml").read_bytes())
    fixture = ROOT / "tests/spec/fixtures/sklearn-project/.azureml/train.runconfig"
    write("job_spec", "sklearn.runconfig", RUNCONFIG + fixture.read_bytes())
    # The jobs the spec tests load, as raw string literals.
    raw = re.compile(r'R"(?P<d>[^(\s"]{0,16})\((?P<body>.*?)\)(?P=d)"', re.S)
    count = 0
    for source in sorted((ROOT / "tests/spec").glob("*.cc")):
        for match in raw.finditer(source.read_text()):
            body = match.group("body")
            if len(body) < 12 or ":" not in body:
                continue
            if body.lstrip().startswith("{"):
                prefix = JSON
            elif re.search(r"^script:", body, re.M):
                prefix = RUNCONFIG
            else:
                prefix = YML
            count += 1
            write("job_spec", f"{source.stem}-{count}", prefix + body.encode())
    hostile = {
        "anchors.yml": YML
        + b"a: &a [x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\nentry_script: train.py\n",
        "deep-flow.yml": YML + b"entry_script: train.py\nx: " + b"[" * 100 + b"]" * 100 + b"\n",
        "deep-json.json": JSON + b'{"x": ' + b"[" * 100 + b"]" * 100 + b"}",
        "complex-key.yml": YML + b"? [a, b]\n: c\n? {x: y}\n: d\nentry_script: train.py\n",
        "tags.yml": YML
        + b"entry_script: !!str train.py\nnode_count: !!int 2\nuse_gpu: !!bool yes\n",
        "documents.yml": YML + b"entry_script: a.py\n---\nentry_script: b.py\n...\n---\n",
        # Overflowed the loader's stack while the number rules were std::regex (fixed).
        "long-digits.yml": YML + b"entry_script: train.py\nshm_size: " + b"9" * 200000 + b"\n",
        "long-float.yml": YML + b"parallel_run: {a: 0." + b"1" * 20000 + b"e5}\n",
        "escapes.yml": YML
        + b'entry_script: "\\ud800\\x00\\u00e9\\U0001F600"\n'
        + b'script_params: {"\\t": "\\N\\_"}\n',
        "invalid-utf8.yml": YML
        + b"entry_script: tr\xffain.py\nenvironment_variables: {A: \xc3\x28}\n",
        "bom.json": JSON + b'\xef\xbb\xbf{"entry_script": "train.py", "node_count": 1e500}',
        "numbers.json": JSON + b'{"entry_script": "train.py", "node_count": 18446744073709551616, '
        b'"max_run_duration_seconds": -9223372036854775809, "shm_size": 1.5e3}',
        "duplicates.json": JSON + b'{"entry_script": "a.py", "entry_script": "b.py"}',
        "absolute-files.yml": YML
        + b"entry_script: /etc/hostname\nsource_directory: /\nenvironment_definition:\n"
        b"  python: {conda_dependencies_file: /dev/null}\n"
        b"  docker: {base_dockerfile: /proc/self/status}\n",
        "runconfig-sections.runconfig": RUNCONFIG
        + b"script: train.py\nspark: {configuration: {a: 1}}\nhdi: {yarnDeployMode: cluster}\n"
        b"dataReferences: {d: {dataStoreName: s, mode: download, pathOnCompute: /x, "
        b"overwrite: true}}\n",
        "command-string.yml": YML + b"command: python train.py --lr 0.5 && echo 'done' | tee x\n",
        "parallel-run.yml": YML
        + b"entry_script: train.py\nparallel_run: {mini_batch_size: 10MB, error_threshold: -1, "
        b"nested: {list: [1, 2.5, true, null, ~, .inf, 0x1F, 1_000]}}\n",
    }
    for name, data in hostile.items():
        write("job_spec", name, data)


# ---- request_bodies: the first byte picks the parser ----

REGISTRATION, HEARTBEAT, LEASE, STATUS, SUBMIT, TOKEN, STREAM, ANSWERS = (
    bytes([i]) for i in range(8)
)


def request_seeds():
    bodies = {
        # docs/protocol.md
        "register.json": REGISTRATION
        + b'{"hostname": "node-1", "ips": ["10.0.0.4"], "ssh_port": 22, "cpus": 16, '
        b'"memory_bytes": 68719476736, "gpus": 0, "labels": {"compute_name": "cpu-cluster", '
        b'"vm_size": "STANDARD_D2_V2", "vm_priority": "dedicated"}, "agent_version": "0.1.0", '
        b'"registration_key": "' + b"0123456789abcdef" * 4 + b'"}',
        "heartbeat.json": HEARTBEAT
        + b'{"state": "unusable", "reason": "disk full: /var", '
        b'"runs": [{"run_id": "exp_1700000000_0123abcd", "epoch": 3, "status": "Running"}]}',
        "lease.json": LEASE + b'{"max_runs": 2, "wait_seconds": 20}',
        "status.json": STATUS
        + b'{"epoch": 4, "status": "Failed", "exit_code": 2, "error": {"code": "UserError", '
        b'"message": "x"}, "timings": {"prepare_ms": 12}, "dropped_logs": '
        b'{"user_logs/std_log.txt": {"bytes": 10, "why": "budget"}}}',
        "submit.json": SUBMIT
        + b'{"job": {"text": "entry_script: train.py\\n", "file_name": "job.yml"}, '
        b'"experiment_name": "exp", "compute_name": "cpu-cluster"}',
        "token.json": TOKEN + b'{"compute_name": "cpu-cluster"}',
        "stream-std-log": STREAM + b"user_logs/std_log.txt",
        "stream-process": STREAM + b"user_logs/std_log_process_12.txt",
        "stream-system": STREAM + b"system_logs/metrics.jsonl",
        "stream-climb": STREAM + b"logs/a/../../b",
        "stream-control": STREAM + b"logs/a\x01b",
        "lease-answer.json": ANSWERS
        + b'{"run_id": "exp_1_ab", "epoch": 2, "experiment_name": "exp", '
        b'"job": {"text": "command: [\\"true\\"]\\n", "file_name": "job.yml"}}',
        "commands-answer.json": ANSWERS
        + b'[{"type": "cancel", "run_id": "r"}, '
        b'{"type": "stop", "run_id": "r", "reason": "moved"}, '
        b'{"type": "drain"}, 7, {"type": 3}]',
        # Hostile: what the parsers must refuse with a 400, never with an exception.
        # An out_of_range exception that escaped the server's handler (fixed).
        "register-overflow.json": REGISTRATION + b'{"hostname": "h", "cpus": 1e500}',
        "register-huge-int.json": REGISTRATION
        + b'{"hostname": "h", "memory_bytes": 18446744073709551615, "ssh_port": -1}',
        "register-labels.json": REGISTRATION
        + b'{"hostname": "h", "labels": {"\xc3\xa9": "v", "k": 1}}',
        "heartbeat-deep.json": HEARTBEAT + b'{"runs": ' + b"[" * 70 + b"]" * 70 + b"}",
        "status-error-big.json": STATUS
        + b'{"epoch": 1, "status": "Completed", "error": {"a": "' + b"x" * 5000 + b'"}}',
        "status-dropped-max.json": STATUS
        + b'{"epoch": 9223372036854775807, "status": "Canceled", "dropped_logs": '
        b'{"a": {"bytes": 9223372036854775807}, "b": {"bytes": 9223372036854775807}}}',
        "submit-bad-name.json": SUBMIT
        + b'{"job": {"text": "x", "file_name": ".."}, '
        b'"experiment_name": "-x", "compute_name": "c"}',
        "submit-utf8.json": SUBMIT
        + b'{"job": {"text": "\\ud83d\\ude00"}, '
        b'"experiment_name": "\xe6\x97\xa5", "compute_name": "c"}',
        # A json::type_error out of the agent's lease answer reader (fixed).
        "lease-answer-types.json": ANSWERS
        + b'{"run_id": "r", "epoch": 1, "experiment_name": 5, '
        b'"job": {"text": "x", "file_name": []}}',
        "empty.json": HEARTBEAT + b"   ",
    }
    for name, data in bodies.items():
        write("request_bodies", name, data)


# ---- snapshot: a tar.gz, or a plain tar that the target compresses itself ----

MTIME = 1700000000


def tar_bytes(add, fmt=tarfile.PAX_FORMAT):
    """The archive up to its end marker (two zero blocks), without tarfile's padding to 10 KiB."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        add(tar)
        end = tar.offset
    return out.getvalue()[: end + 2 * tarfile.BLOCKSIZE]


def member(tar, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", pax=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.linkname = link
    if pax:
        info.pax_headers = pax
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def with_size_field(archive, field):
    """The archive's first header with its size field replaced and its checksum made right again,
    so that the reader gets past the checksum to the size."""
    header = bytearray(archive[:512])
    header[124:136] = field
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + archive[512:]


def gz(data):
    return gzip.compress(data, mtime=0)


def snapshot_seeds():
    def project(tar):
        member(tar, "./", tarfile.DIRTYPE, mode=0o755)
        member(tar, "train.py", data=b"print('training')\n", mode=0o755)
        member(tar, "src", tarfile.DIRTYPE, mode=0o755)
        member(tar, "src/model.py", data=b"x = 1\n" * 50)
        member(tar, "src/link.py", tarfile.SYMTYPE, link="model.py")
        member(tar, "data", tarfile.DIRTYPE, mode=0o700)
        member(tar, "data/up", tarfile.SYMTYPE, link="../src")
        member(tar, "data/hard.py", tarfile.LNKTYPE, link="src/model.py")

    archives = {
        "project": tar_bytes(project),
        "project-ustar": tar_bytes(project, tarfile.USTAR_FORMAT),
        "project-gnu": tar_bytes(project, tarfile.GNU_FORMAT),
        "dotdot": tar_bytes(lambda t: member(t, "../escaped.txt", data=b"x")),
        "dotdot-inner": tar_bytes(lambda t: member(t, "a/../../escaped.txt", data=b"x")),
        "absolute": tar_bytes(lambda t: member(t, "/tmp/escaped.txt", data=b"x")),
        "symlink-out": tar_bytes(lambda t: member(t, "out", tarfile.SYMTYPE, link="../../")),
        "symlink-absolute": tar_bytes(lambda t: member(t, "etc", tarfile.SYMTYPE, link="/etc")),
        "symlink-then-write": tar_bytes(
            lambda t: (
                member(t, "l", tarfile.SYMTYPE, link="."),
                member(t, "l/x", data=b"through the link"),
            )
        ),
        "symlink-chain": tar_bytes(
            lambda t: (
                member(t, "s", tarfile.SYMTYPE, link="."),
                member(t, "d", tarfile.DIRTYPE),
                member(t, "d/t", tarfile.SYMTYPE, link="../s/s/../.."),
            )
        ),
        "hardlink-out": tar_bytes(
            lambda t: member(t, "passwd", tarfile.LNKTYPE, link="/etc/passwd")
        ),
        "hardlink-dotdot": tar_bytes(lambda t: member(t, "h", tarfile.LNKTYPE, link="../x")),
        "hardlink-later": tar_bytes(
            lambda t: (
                member(t, "h", tarfile.LNKTYPE, link="f"),
                member(t, "f", data=b"x"),
            )
        ),
        "hardlink-to-link": tar_bytes(
            lambda t: (
                member(t, "l", tarfile.SYMTYPE, link="."),
                member(t, "h", tarfile.LNKTYPE, link="l"),
            )
        ),
        "duplicate": tar_bytes(lambda t: (member(t, "f", data=b"1"), member(t, "f", data=b"2"))),
        "file-then-dir": tar_bytes(
            lambda t: (member(t, "f", data=b"1"), member(t, "f/g", data=b"2"))
        ),
        "special-files": tar_bytes(
            lambda t: (
                member(t, "fifo", tarfile.FIFOTYPE),
                member(t, "null", tarfile.CHRTYPE),
                member(t, "disk", tarfile.BLKTYPE),
            )
        ),
        "setuid": tar_bytes(lambda t: member(t, "suid", data=b"#!/bin/sh\n", mode=0o6755)),
        "mode-000-dir": tar_bytes(
            lambda t: (
                member(t, "locked", tarfile.DIRTYPE, mode=0),
                member(t, "locked/f", data=b"x", mode=0),
            )
        ),
        "pax-long-path": tar_bytes(lambda t: member(t, "d/" * 60 + "f", data=b"x")),
        "pax-path-override": tar_bytes(
            lambda t: member(t, "innocent", data=b"x", pax={"path": "../pax-escaped"})
        ),
        "pax-huge-size": tar_bytes(
            lambda t: member(t, "big", data=b"x", pax={"size": "99999999999999"})
        ),
        "zeros": tar_bytes(lambda t: member(t, "zeros", data=bytes(3 << 20))),
        "many-files": tar_bytes(
            lambda t: [member(t, f"f{i}", data=b"x") for i in range(20)]
        ),
    }
    # Headers that declare far more data than follows: 8 GiB in octal, 4 GiB base-256 encoded (GNU),
    # and a negative base-256 size.
    plain = tar_bytes(lambda t: member(t, "declared", data=b"x" * 10), tarfile.USTAR_FORMAT)
    archives["declared-size"] = with_size_field(plain, b"77777777777\x00")[:1024]
    archives["base256-size"] = with_size_field(plain, b"\x80" + b"\x00" * 6 + b"\x01" + b"\x00" * 4)
    archives["negative-size"] = with_size_field(plain, b"\xff" * 12)[:1024]
    # 3 MiB of zeros travel compressed only.
    zeros = archives.pop("zeros")
    write("snapshot", "zeros.tar.gz", gz(zeros))
    for name, data in archives.items():
        write("snapshot", f"{name}.tar", data)
    # The gzip path as it is in production, for a few of them.
    for name in ("project", "dotdot", "symlink-out", "hardlink-out"):
        write("snapshot", f"{name}.tar.gz", gz(archives[name]))
    write("snapshot", "gzip-truncated.tar.gz", gz(archives["project"])[:100])
    project_tar = archives["project"]
    write("snapshot", "gzip-concatenated.tar.gz", gz(project_tar[:512]) + gz(project_tar[512:]))
    write("snapshot", "gzip-garbage-after.tar.gz", gz(archives["project"]) + b"garbage")


# ---- metrics_lines: the content of metrics.jsonl and resources.jsonl ----


def metrics_seeds():
    lines = {
        # tests/metrics/script_metrics_test.cc and run_metrics_test.cc
        "records.jsonl": '{"name":"loss","kind":"scalar","time":1.0,"value":0.5,"step":0}\n'
        '{"name":7,"kind":"scalar","value":1}\n'
        '{"name":"loss","kind":5,"value":1}\n'
        '{"name":"loss","kind":"scalar","value":{"nested":1}}\n'
        '{"name":"phase","kind":"scalar","value":"warmup"}\n'
        '{"name":"acc","kind":"list","time":2.0,"values":[0.5,0.7]}\n'
        '{"name":"final","kind":"row","row":{"accuracy":0.9}}\n'
        '{"name":"grad_norm","kind":"scalar","value":"NaN"}\n'
        '{"name":"best","kind":"scalar","value":"-Infinity"}\n'
        '{"name":"converged","kind":"scalar","value":true}\n'
        '{"name":"epoch","value":3}\n'
        '{"kind":"truncated","name":"","time":3.0}\n'
        '{"name":"loss","kind":"scal',
        "resources.jsonl": '{"time":1700000000.5,"cpu_seconds":1.25,"rss_bytes":1048576,'
        '"gpu":[{"index":0,"utilization":50}]}\n'
        '{"time":1700000001.5,"cpu_seconds":2.5,"rss_bytes":2097152}\n',
        "mixed.jsonl": '{"name":"loss","value":1}\n{"cpu_seconds":3}\nnot json\n\n'
        '{"name":"x","kind":"scalar","value":1e308}\n{"cpu_seconds":4}',
        "deep.jsonl": '{"name":"d","value":' + "[" * 70 + "]" * 70 + "}\n",
        "overflow.jsonl": '{"name":"o","value":1e500}\n{"name":"i","value":18446744073709551616}\n',
        "escapes.jsonl": '{"name":"\\u00e9\\ud83d\\ude00","value":"Infinity"}\n'
        '{"name":"\\ud800","value":1}\n',
        "invalid-utf8.jsonl": b'{"name":"\xff","value":1}\n{"name":"ok","value":2}\n',
        "crlf.jsonl": '{"name":"a","value":1}\r\n{"name":"b","value":2}\r\n',
    }
    for name, data in lines.items():
        write("metrics_lines", name, data)


# ---- shim_protocol: the first byte picks launch spec (0), shim state (1) or exit record (2) ----


def shim_seeds():
    files = {
        "launch.json": b"\x00"
        b'{"argv":["python","train.py","--lr","0.5"],"env":["PATH=/usr/bin","HOME=/root"],'
        b'"cwd":"/runs/r/wd","log_path":"/runs/r/user_logs/std_log.txt",'
        b'"state_path":"/runs/r/shim.json",'
        b'"exit_path":"/runs/r/exit.json","deadline_seconds":3600.5,"kill_grace_seconds":10,'
        b'"uid":1000,"gid":1000,"caller_syncs_outcome":true}',
        "launch-nulls.json": b"\x00"
        b'{"argv":["true"],"log_path":"l","state_path":"s","exit_path":"e",'
        b'"deadline_seconds":null,"uid":null}',
        "launch-bad-uid.json": b"\x00"
        b'{"argv":["a"],"log_path":"l","state_path":"s","exit_path":"e","uid":4294967296}',
        "launch-negative-grace.json": b"\x00"
        b'{"argv":["a"],"log_path":"l","state_path":"s","exit_path":"e","kill_grace_seconds":-0.0}',
        "state.json": b"\x01"
        b'{"shim_pid":1234,"shim_start_time":987654321,"child_pid":1235,'
        b'"started_at_ms":1700000000000}',
        "state-huge.json": b"\x01"
        b'{"shim_pid":2147483648,"shim_start_time":18446744073709551615,"child_pid":1,'
        b'"started_at_ms":9223372036854775807}',
        "exit.json": b"\x02"
        b'{"reason":"Exited","exit_code":-2147483648,"started_at_ms":1,"ended_at_ms":2}',
        "exit-signaled.json": b"\x02" b'{"reason":"Timeout","signal":9,"error":"\\u00e9"}',
        "exit-spawn-failed.json": b"\x02" b'{"reason":"SpawnFailed","error":"no such file"}',
        "exit-unknown.json": b"\x02" b'{"reason":"Exploded"}',
        "deep.json": b"\x00" b'{"argv":' + b"[" * 70 + b"]" * 70 + b"}",
        "launch-ranks.json": b"\x00"
        b'{"argv":["python","train.py"],"log_path":"l0","state_path":"s","exit_path":"e",'
        b'"inherit_env":true,"ranks":[{"rank":0,"argv":["python","train.py"],'
        b'"env":["RANK=0"],"log_path":"l0"},{"rank":1,"argv":["python"],"env":[],'
        b'"log_path":"l1"}]}',
        "launch-ranks-bad.json": b"\x00"
        b'{"argv":["a"],"log_path":"l","state_path":"s","exit_path":"e",'
        b'"ranks":[{"rank":-1,"argv":[],"log_path":""},7]}',
        "exit-ranks.json": b"\x02"
        b'{"reason":"Exited","exit_code":3,"failed_rank":2,"ranks":[{"rank":2,"exit_code":3,'
        b'"ended_at_ms":5},{"rank":0,"signal":15,"ended_at_ms":6},{"rank":1}]}',
    }
    for name, data in files.items():
        write("shim_protocol", name, data)


if __name__ == "__main__":
    job_seeds()
    request_seeds()
    snapshot_seeds()
    metrics_seeds()
    shim_seeds()
