"""Credentials in store URIs never leave the process environment: the one masker of URIs, and where the real ones
come back from.

`mask_uri` hides a URI's password (`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`) and any query-string
credential (`?password=`, `token=`, ...); it takes any text and masks every URI in it, so a message quoting one is
masked too. Whatever a search shows, logs or stores (MLflow params, the run registry, Tune's saved state, the
report's notes, the end-of-search commands) passes through it.

What a resume needs stays masked on disk: the real Optuna storage URL is given again (`--optuna-storage`, or the
environment variable OPTUNA_STORAGE_ENV) and the real tracking URI is MLFLOW_TRACKING_URI's. `reveal` turns a masked
URI back into the real one it was made from, or says what to supply. A search keeps its real Optuna storage URL in
OPTUNA_STORAGE_ENV of its own process (and of Ray's, which inherit it), where the searcher Tune unpickles finds it.

(Not named secrets.py: search/run.py runs as a script, with search/ first on sys.path.)
"""
from __future__ import annotations

import os
import re

MASK = "***"
OPTUNA_STORAGE_ENV = "OCCPOSE_OPTUNA_STORAGE"
SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "pass", "secret", "token", "access_token", "auth_token",
                     "api_key", "apikey", "access_key", "secret_key", "sig", "signature", "sas", "credential",
                     "credentials", "aws_secret_access_key", "aws_session_token")
# scheme://user:PASSWORD@host (user may be empty); the password ends at the last '@' before the path.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^/@:\s'\"]*:)(?P<secret>[^/\s'\"]*)(?=@)")
_QUERY = re.compile(r"(?P<head>[?&;](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)(?P<secret>[^&;#\s'\"]+)",
                    re.IGNORECASE)


class MaskedSecret(ValueError):
    """A masked URI whose real form was not supplied."""


def mask_uri(text):
    """`text` with every URI password and query-string credential replaced by `***`; non-strings unchanged."""
    if not isinstance(text, str):
        return text
    text = _USERINFO.sub(lambda m: m["head"] + (MASK if m["secret"] else ""), text)
    return _QUERY.sub(lambda m: m["head"] + MASK, text)


def has_secret(uri: str | None) -> bool:
    return isinstance(uri, str) and mask_uri(uri) != uri


def is_masked(uri: str | None) -> bool:
    return isinstance(uri, str) and MASK in uri


def reveal(stored: str | None, *supplied: str | None, what: str = "the Optuna storage",
           how: str = f"pass --optuna-storage URL again (or set {OPTUNA_STORAGE_ENV})") -> str | None:
    """The real URI of `stored`: `stored` itself when nothing in it is masked, else the first of `supplied` (then
    OPTUNA_STORAGE_ENV) that masks to it. MaskedSecret, saying `how` to supply it, when none does."""
    if not is_masked(stored):
        return stored
    for candidate in (*supplied, os.environ.get(OPTUNA_STORAGE_ENV)):
        if candidate and mask_uri(candidate) == stored:
            return candidate
    raise MaskedSecret(f"{what} {stored} was stored without its credentials; {how}")


def keep_optuna_storage(url: str | None) -> None:
    """Hold the real Optuna storage URL in this process's environment (and its children's), where a searcher Tune
    unpickles (search/study.py StudyStorage) and the checks read it back."""
    if url and has_secret(url):
        os.environ[OPTUNA_STORAGE_ENV] = url
