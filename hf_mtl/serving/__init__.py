"""`hf-mtl serve`: an HTTP server (FastAPI + uvicorn, `pip install 'hf_mtl[serve]'`) that runs every head of a model
per request, with routes shaped as Text Embeddings Inference's, dynamic batching and a web page at `/`."""

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name):
    # Imported on first use: `hf-mtl serve` without the serve extra then says which extra to install.
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
