"""Fetch and verify the real benchmarks: `python -m datasets.download {coco,crowdpose,ochuman,mpii} --root DIR`
(or `--verify DIR`). `manifest` (what is fetched from where, with which checksum), `fetch` (resumable HTTP),
`extract` (atomic unpacking and the receipt), `verify` (the checks of an existing root), `run` (the command line).
"""
