"""A local stand-in for the Hugging Face hub: the two requests ``hf_hub_download`` makes
(``HEAD`` for the metadata, ``GET`` for the bytes) at ``/{owner}/{repo}/resolve/{rev}/{file}``,
with the headers the hub sends (``X-Repo-Commit``, ``ETag``, ``X-Error-Code``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_app(files: dict[str, Path]) -> Starlette:
    """``files``: ``"owner/repo/filename"`` → the local file served for it (any revision)."""
    etags = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    repos = {name.rsplit("/", 1)[0] for name in files}

    async def resolve(request: Request) -> Response:
        params = request.path_params
        repo = f"{params['owner']}/{params['repo']}"
        name = f"{repo}/{params['path']}"
        if repo not in repos:
            return Response(status_code=404, headers={"X-Error-Code": "RepoNotFound"})
        if name not in files:
            return Response(
                status_code=404,
                headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT},
            )
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etags[name]}"'}
        return FileResponse(files[name], headers=headers)

    route = "/{owner}/{repo}/resolve/{revision}/{path:path}"
    return Starlette(routes=[Route(route, resolve, methods=["GET", "HEAD"])])
