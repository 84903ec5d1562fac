"""The HTTP server: health, metrics and the ingest API, on `http.listen`."""

from gateway.http.app import HttpServer

__all__ = ["HttpServer"]
