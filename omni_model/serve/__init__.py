"""The browser demo: a web server with one page that talks to a model over a WebSocket."""

from omni_model.serve.app import ServerSettings, create_app, run_server

__all__ = ["ServerSettings", "create_app", "run_server"]
