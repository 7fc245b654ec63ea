"""`python -m datasets.download` against a local HTTP server on 127.0.0.1 (threaded, with Range support) serving
small archives built at test time from the real fixtures, in the official archives' shapes, with their MD5s:
a cut connection and a part left by an earlier run resume with Range requests; a corrupt byte fails and leaves
nothing; a re-run sends no request; `--verify` passes on the result and names the damaged file otherwise."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from datasets import layouts
from datasets.download.run import main


class Server:
    """Serves `files` {name: bytes} at /<name>, honouring `Range: bytes=N-` (206 + Content-Range). `drop[name] = n`
    makes the next full GET of `name` announce the whole length but close after n bytes (once); `requests`
    records (name, Range header) of every GET."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.drop, self.requests = dict(files), {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.drop.pop(name, None) if not start else None
                self.wfile.write(data[start:cut] if cut is not None else data[start:])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def gets(self, name: str) -> list:
        return [r for n, r in self.requests if n == name]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _entry(name, kind, members, data, published=True):
    entry = {"name": name, "url": f"https://official.example/{name}", "kind": kind, "members": members}
    if published:
        entry |= {"md5": hashlib.md5(data).hexdigest(), "size": len(data)}
    return entry


@pytest.fixture(scope="module")
def mirror(shared_data, tmp_path_factory):
    """The archives (COCO's three zips and the detections json with published MD5s; MPII's image tarball and
    MMPose's annotation tar without) served locally, and a manifest naming them."""
    coco = {p.name: p.read_bytes() for p in sorted((shared_data / "coco").glob("*.jpg"))}
    mpii = {p.name: p.read_bytes() for p in sorted((shared_data / "mpii").glob("*.jpg"))}
    ann = (shared_data / "coco/test_coco.json").read_bytes()
    files = {
        "train2017.zip": _zip({f"train2017/{n}": d for n, d in coco.items()}),
        "val2017.zip": _zip({f"val2017/{n}": d for n, d in coco.items()}),
        "annotations_trainval2017.zip": _zip({"annotations/person_keypoints_train2017.json": ann,
                                              "annotations/person_keypoints_val2017.json": ann,
                                              "annotations/instances_val2017.json": b"{}"}),
        "COCO_val2017_detections_AP_H_56_person.json": (shared_data / "coco/test_coco_det_AP_H_56.json").read_bytes(),
        "mpii_human_pose_v1.tar.gz": _tar({f"images/{n}": d for n, d in mpii.items()}, "w:gz"),
        "mpii_annotations.tar": _tar({
            "mpii_annotations/annotations/mpii_train.json": (shared_data / "mpii/test_mpii.json").read_bytes(),
            "mpii_annotations/annotations/mpii_val.json": (shared_data / "mpii/test_mpii.json").read_bytes(),
            "mpii_annotations/annotations/mpii_gt_val.mat": (shared_data / "mpii/mpii_gt_val_first5.mat").read_bytes(),
        }, "w"),
    }
    det = "COCO_val2017_detections_AP_H_56_person.json"
    manifest = {
        "coco": {"archives": [
            _entry("train2017.zip", "zip", {"train2017/": "train2017/"}, files["train2017.zip"]),
            _entry("val2017.zip", "zip", {"val2017/": "val2017/"}, files["val2017.zip"]),
            _entry("annotations_trainval2017.zip", "zip",
                   {f"annotations/person_keypoints_{s}.json": f"annotations/person_keypoints_{s}.json"
                    for s in ("train2017", "val2017")}, files["annotations_trainval2017.zip"]),
            _entry(det, "file", {det: f"person_detection_results/{det}"}, files[det], published=False),
        ], "image_counts": {"train2017": len(coco), "val2017": len(coco)}},
        "mpii": {"archives": [
            _entry("mpii_human_pose_v1.tar.gz", "tar", {"images/": "images/"}, None, published=False),
            _entry("mpii_annotations.tar", "tar", {f"annotations/{n}": f"annotations/{n}" for n in
                                                   ("mpii_train.json", "mpii_val.json", "mpii_gt_val.mat")},
                   None, published=False),
        ], "image_counts": {"images": len(mpii)}},
    }
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    path.write_text(json.dumps(manifest))
    server = Server(files)
    yield server, path
    server.httpd.shutdown()


def _leftovers(root: Path) -> list[str]:
    """Partial downloads, archives and extraction folders left under `root`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith((".extract-", ".old-")) or p.suffix == ".part" or p.parent.name == ".downloads")


def test_coco_resumes_a_cut_connection_and_a_part_verifies_and_a_rerun_does_nothing(mirror, tmp_path):
    server, manifest = mirror
    root = tmp_path / "data"
    (root / ".downloads").mkdir(parents=True)
    train = server.files["train2017.zip"]
    (root / ".downloads/train2017.zip.part").write_bytes(train[:1000])  # an earlier run stopped here
    server.drop["val2017.zip"] = 5000  # this connection breaks after 5000 bytes
    args = ["-m", "datasets.download", "coco", "--root", root, "--manifest", manifest, "--base-url", server.url]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert server.gets("train2017.zip") == ["bytes=1000-"]
    assert server.gets("val2017.zip") == [None, "bytes=5000-"]
    assert "verifies" in run.stdout and "MD5" in run.stdout and "val2017.zip: downloading" in run.stderr
    layout = layouts.resolve("coco", root / "coco")
    assert sorted(p.name for p in layout.val.images.iterdir()) == sorted(p.name for p in layout.train.images.iterdir())
    assert len(list(layout.val.images.glob("*.jpg"))) == 4
    assert not (root / "coco/annotations/instances_val2017.json").exists()  # only the keypoint files are kept
    assert (root / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json").is_file()
    assert _leftovers(root) == [] and not (root / ".downloads").exists()
    receipt = json.loads((root / "coco/.download-receipt.json").read_text())
    assert sorted(receipt["files"]) == ["annotations/person_keypoints_train2017.json",
                                        "annotations/person_keypoints_val2017.json",
                                        "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"]

    before = len(server.requests)
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "coco").rglob("*")}
    again = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT,
                           env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == before and again.stdout.count("already in place") == 4
    assert {p: p.stat().st_mtime_ns for p in (root / "coco").rglob("*")} == mtimes


def test_verify_names_a_damaged_annotation_file_and_a_truncated_image(mirror, tmp_path, capsys):
    server, manifest = mirror
    root = tmp_path / "data"
    assert main(["coco", "--root", str(root), "--manifest", str(manifest), "--base-url", server.url]) == 0
    verify = ["--manifest", str(manifest), "--sample", "0"]  # the manifest's image counts are the fixtures'
    assert main(["coco", "--verify", str(root), *verify]) == 0
    assert main(["coco", "--verify", str(root / "coco"), *verify]) == 0  # the dataset's folder itself
    capsys.readouterr()
    ann = root / "coco/annotations/person_keypoints_val2017.json"
    ann.write_text(ann.read_text().replace('"iscrowd": 0', '"iscrowd": 0 ', 1))  # one byte more, still valid
    image = sorted((root / "coco/val2017").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    assert main(["coco", "--verify", str(root), *verify]) == 1
    err = capsys.readouterr().err
    assert f"{ann}: SHA-256 differs" in err and f"{image}: truncated JPEG" in err
    image.unlink()
    assert main(["coco", "--verify", str(root), *verify]) == 1
    err = capsys.readouterr().err
    assert "val2017: 3 image files, the release has 4" in err and "1 of its 4 images are missing" in err
    assert main(["coco", "--verify", str(root)]) == 1  # the built-in manifest: the full release's counts
    assert "val2017: 3 image files, the release has 5000" in capsys.readouterr().err


@pytest.mark.parametrize("dataset, archive, named", [
    ("coco", "val2017.zip", "is not the published"),          # a published MD5 catches it
    ("mpii", "mpii_human_pose_v1.tar.gz", "is damaged"),      # none published: gzip's CRC catches it
])
def test_a_corrupt_byte_fails_and_leaves_nothing(mirror, tmp_path, capsys, dataset, archive, named):
    server, manifest = mirror
    good = server.files[archive]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    server.files[archive] = bytes(bad)
    try:
        code = main([dataset, "--root", str(tmp_path), "--manifest", str(manifest), "--base-url", server.url])
    finally:
        server.files[archive] = good
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: {archive}: " in err and named in err
    assert _leftovers(tmp_path) == []
    folder = {"val2017.zip": "coco/val2017", "mpii_human_pose_v1.tar.gz": "mpii/images"}[archive]
    assert not (tmp_path / folder).exists()
    # the next run fetches the archive again, whole, and completes
    assert main([dataset, "--root", str(tmp_path), "--manifest", str(manifest), "--base-url", server.url]) == 0
    assert len(list((tmp_path / folder).glob("*.jpg"))) >= 4


def test_a_second_download_into_the_same_root_is_refused_while_the_first_runs(mirror, tmp_path, capsys):
    import fcntl

    server, manifest = mirror
    with open(tmp_path / ".download.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a download in another process holds it
        assert main(["mpii", "--root", str(tmp_path), "--manifest", str(manifest), "--base-url", server.url]) == 1
    assert "another download into" in capsys.readouterr().err and not (tmp_path / "mpii").exists()


def test_mpii_without_published_checksums_is_checked_by_its_archives_and_verifies(mirror, tmp_path, capsys):
    server, manifest = mirror
    assert main(["mpii", "--root", str(tmp_path), "--manifest", str(manifest), "--base-url", server.url]) == 0
    out = capsys.readouterr().out
    assert "no checksum is published" in out and "mpii_gt_val.mat: the ground truth of" in out
    layout = layouts.resolve("mpii", tmp_path / "mpii")
    assert layout.val_gt.is_file() and len(list(layout.val.images.glob("*.jpg"))) == 5


def test_crowdpose_and_ochuman_print_their_manual_steps_and_verify_what_is_there(mirror, real_layouts, tmp_path,
                                                                                capsys):
    assert main(["crowdpose", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "https://github.com/Jeff-sjtu/CrowdPose" in out.out and f"mkdir -p {tmp_path}/crowdpose/annotations" \
        in out.out and "follow the steps above" in out.err
    assert main(["ochuman", "--root", str(tmp_path)]) == 1
    assert "https://github.com/liruilong940607/OCHumanApi" in capsys.readouterr().out
    for name in ("crowdpose", "ochuman", "mpii", "coco"):  # the fixtures' counts for the last two
        assert main([name, "--verify", str(real_layouts), "--sample", "0", "--manifest", str(mirror[1])]) == 0, \
            capsys.readouterr().err
    assert "no .download-receipt.json (files placed by hand)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["coco"], "one of the arguments --root --verify is required"),
    (["coco", "--root", "R", "--verify", "R"], "not allowed with argument"),
    (["lsp", "--root", "R"], "invalid choice: 'lsp'"),
    (["coco", "--root", "FILE"], "--root FILE: FILE exists and is not a directory"),
    (["coco", "--verify", "MISSING"], "--verify MISSING: no such directory"),
    (["coco", "--root", "R", "--base-url", "ftp://mirror"], "--base-url 'ftp://mirror': expected an http"),
    (["coco", "--root", "R", "--manifest", "MISSING"], "--manifest MISSING: no such file"),
    (["coco", "--root", "R", "--manifest", "BADMANIFEST"], "unknown dataset 'lsp'"),
    (["coco", "--root", "R", "--manifest", "DIR"], "--manifest DIR: is a directory, not a file"),
    (["coco", "--root", "R", "--manifest", "BADENTRY"],
     "BADENTRY: entry 'coco': field 'archives[0].members': expected an object {archive member: path under the "
     "dataset root}, got a list"),
    (["coco", "--root", "R", "--manifest", "BADCOUNT"],
     "BADCOUNT: entry 'coco': field 'image_counts.val2017': expected a count (an integer >= 0), got a text"),
    (["coco", "--root", "R", "--manifest", "NOTOBJECT"], "NOTOBJECT: entry 'coco': expected an object"),
    (["coco", "--root", "R", "--sample", "-1"], "--sample: must be >= 0"),
    (["coco", "--root", ""], "argument --root: an empty path"),
    (["coco", "--verify", " "], "argument --verify: an empty path"),
])
def test_bad_flags_exit_2_naming_the_flag_before_any_write(tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("")
    (tmp_path / "BADMANIFEST").write_text(json.dumps({"lsp": {}}))
    (tmp_path / "DIR").mkdir()
    archive = {"name": "val2017.zip", "url": "https://x/val2017.zip", "kind": "zip", "members": ["val2017/"]}
    (tmp_path / "BADENTRY").write_text(json.dumps({"coco": {"archives": [archive]}}))
    (tmp_path / "BADCOUNT").write_text(json.dumps({"coco": {"image_counts": {"val2017": "5000"}}}))
    (tmp_path / "NOTOBJECT").write_text(json.dumps({"coco": [archive]}))
    names = {n: tmp_path / n for n in ("R", "FILE", "MISSING", "BADMANIFEST", "DIR", "BADENTRY", "BADCOUNT",
                                       "NOTOBJECT")}
    argv = [str(names.get(a, a)) for a in argv]
    message = message.replace("FILE", str(names["FILE"])).replace("MISSING", str(names["MISSING"])) \
        .replace("DIR", str(names["DIR"]))
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "R").exists()


@pytest.mark.parametrize("change, message", [
    ({"name": "../../evil.zip"}, "field 'archives[0].name': must be a plain file name"),
    ({"name": ""}, "field 'archives[0].name': must be a plain file name"),
    ({"members": {"val2017/": "../../outside/"}}, "'../../outside/' is not a relative path inside"),
    ({"members": {"val2017/": "/tmp/abs"}}, "'/tmp/abs' is not a relative path inside"),
    ({"members": {}}, "field 'archives[0].members': names no member to keep"),
    ({"url": ""}, "field 'archives[0].url': must be an http://, https:// or file:// URL"),
    ({"url": "ftp://mirror/val2017.zip"}, "field 'archives[0].url': must be an http://"),
])
def test_a_manifest_archive_that_would_write_outside_the_root_or_fetch_nothing_exits_2(tmp_path, capsys, change,
                                                                                       message):
    """Malformed --manifest entries are refused before any fetch: a name or member path that climbs out of ROOT
    (the download is saved as ROOT/.downloads/<name>, members are moved to ROOT/<dataset>/<path>), an empty URL
    (was urllib's ValueError traceback), nothing to keep; and two archives of one name, no archives nor steps."""
    archive = {"name": "val2017.zip", "url": "https://x/val2017.zip", "kind": "zip", "members": {"val2017/": "val2017/"}}
    cases = [({"coco": {"archives": [{**archive, **change}]}}, message),
             ({"coco": {"archives": [archive, archive]}}, "two archives are named 'val2017.zip'"),
             ({"coco": {"archives": []}}, "no 'manual' steps")]
    for n, (manifest, expected) in enumerate(cases):
        (tmp_path / f"m{n}.json").write_text(json.dumps(manifest))
        with pytest.raises(SystemExit) as exit_:
            main(["coco", "--root", str(tmp_path / "R"), "--manifest", str(tmp_path / f"m{n}.json")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and expected in err and "Traceback" not in err, err
        assert not (tmp_path / "R").exists()
