"""Errors as Text Embeddings Inference answers them: `{"error": message, "error_type": kind}` with TEI's statuses."""

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# TEI's error kinds and their statuses (router/src/http/server.rs); "validation" is 413 there for too many inputs or
# too long an input, and 422 here for a body of the wrong shape (which TEI leaves to its JSON extractor).
EMPTY, VALIDATION, TOKENIZER, BACKEND, OVERLOADED, UNHEALTHY = (
    "empty", "validation", "tokenizer", "backend", "overloaded", "unhealthy"
)


class ServeError(Exception):
    """A request the server refuses or could not answer: the status and TEI error kind to reply with."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def error_response(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)


def validation_message(error: RequestValidationError) -> str:
    """The first few problems as `body.inputs: message`; never the input itself, which may be megabytes."""
    problems = []
    for problem in error.errors()[:3]:
        where = ".".join(str(part) for part in problem.get("loc", ()))
        problems.append(f"{where}: {problem.get('msg', 'invalid')}" if where else problem.get("msg", "invalid"))
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app, on_error) -> None:
    """Every refusal and failure as TEI's error JSON; `on_error(request, status, error_type)` counts it."""

    def reply(request, status, error_type, message):
        on_error(request, status, error_type)
        return error_response(status, error_type, message)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError):
        return reply(request, error.status, error.error_type, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError):
        return reply(request, 422, VALIDATION, validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        # FastAPI answers 400 for a body it cannot parse at all (bad UTF-8, nesting deeper than Python's recursion).
        if error.status_code == 400:
            return reply(request, 422, VALIDATION, f"the body is not valid JSON: {error.detail}")
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, VALIDATION)
        return reply(request, error.status_code, kind, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        return reply(request, 424, BACKEND, f"inference failed: {type(error).__name__}: {error}")
