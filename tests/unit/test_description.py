"""What a replica says its deployment answers: `describe` over loaded objects."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from capstan.batching import batch
from capstan.ingress import ASGI_APP_ATTRIBUTE, ingress
from capstan.multiplex import multiplexed
from executors.replica.description import describe
from executors.replica.loader import UserCode

# (name, is_streaming, parameters, summary), the shape each case expects.
Method = tuple[str, bool, list[str], str]


class Model:
    """A class deployment with every kind of method."""

    def __init__(self) -> None:
        self.property_runs = 0

    def __call__(self, text: str, *, loud: bool = False) -> str:
        """Echoes the text.

        Louder when asked."""
        return text.upper() if loud else text

    def predict(self, x: float, y: float = 0.0) -> float:
        return x + y

    def tokens(self, prompt: str) -> Iterator[str]:
        """Streams the prompt's words."""
        yield from prompt.split()

    async def atokens(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def fetch(self, *keys: str, **options: str) -> list[str]:
        return list(keys)

    @staticmethod
    def version() -> str:
        return "1"

    @classmethod
    def build(cls, size: int) -> Model:
        return cls()

    @property
    def expensive(self) -> int:
        self.property_runs += 1
        return self.property_runs

    class Nested:
        pass

    def _private(self) -> None:
        pass


class Batched:
    """Methods wrapped by @serve.batch take lists, called one item at a time."""

    @batch(max_batch_size=4)
    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embeds texts."""
        return [[float(len(t))] for t in texts]

    @batch
    def stream(self, prompts: list[str]) -> Iterator[list[str]]:
        yield prompts

    @batch
    async def astream(self, prompts: list[str]) -> AsyncIterator[list[str]]:
        yield prompts


class Multiplexed:
    @multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> str:
        """Loads a model."""
        return model_id

    async def __call__(self, text: str) -> str:
        return text


def _returns_generator(fn):
    # A user's decorator: the wrapper returns the generator, it is not one.
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class Decorated:
    @_returns_generator
    def lines(self, path: str) -> Iterator[str]:
        yield path


api = FastAPI()


@ingress(api)
class Api:
    @api.get("/hello")
    def hello(self) -> str:
        return "hello"

    @api.post("/items")
    async def create(self, name: str) -> dict:
        return {"name": name}

    def stats(self) -> dict:
        """Not a route: still a method."""
        return {}


async def _homepage(request):
    return PlainTextResponse("home")


starlette_app = Starlette(routes=[Route("/", _homepage)])


def hello(name: str = "world") -> str:
    """Greets someone."""
    return f"hello {name}"


def count(n: int) -> Iterator[int]:
    yield from range(n)


async def acount(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def http_handler(request):
    return "ok"


def _function(fn) -> UserCode:
    return UserCode(fn.__name__, fn, True)


def _call(parameters: list[str], *, is_streaming: bool = False, summary: str = "") -> Method:
    return ("__call__", is_streaming, parameters, summary)


MODEL_METHODS: list[Method] = [
    ("__call__", False, ["text", "loud"], "Echoes the text."),
    ("atokens", True, ["n"], ""),
    ("build", False, ["size"], ""),
    ("fetch", False, ["*keys", "**options"], ""),
    ("predict", False, ["x", "y"], ""),
    ("tokens", True, ["prompt"], "Streams the prompt's words."),
    ("version", False, [], ""),
]

CASES = [
    ("class", UserCode("Model", Model(), False), MODEL_METHODS, False),
    ("function", _function(hello), [_call(["name"], summary="Greets someone.")], False),
    ("generator function", _function(count), [_call(["n"], is_streaming=True)], False),
    ("async generator function", _function(acount), [_call(["n"], is_streaming=True)], False),
    ("HTTP handler function", _function(http_handler), [_call(["request"])], False),
    (
        "batched methods",
        UserCode("Batched", Batched(), False),
        [
            ("astream", True, ["prompts"], ""),
            ("embed", False, ["texts"], "Embeds texts."),
            ("stream", True, ["prompts"], ""),
        ],
        False,
    ),
    (
        "multiplexed loader",
        UserCode("Multiplexed", Multiplexed(), False),
        [("__call__", False, ["text"], ""), ("get_model", False, ["model_id"], "Loads a model.")],
        False,
    ),
    (
        "decorator returning a generator",
        UserCode("Decorated", Decorated(), False),
        [("lines", True, ["path"], "")],
        False,
    ),
    (
        "FastAPI ingress: routes are not methods",
        UserCode("Api", Api(), False, getattr(Api, ASGI_APP_ATTRIBUTE)),
        [("stats", False, [], "Not a route: still a method.")],
        True,
    ),
    (
        "ingress without a class of its own",
        UserCode("Only", ingress(starlette_app)()(), False, starlette_app),
        [],
        True,
    ),
    (
        "an app served by itself",
        UserCode("starlette_app", starlette_app, False, starlette_app),
        [],
        True,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("user", "methods", "serves_http"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_describe(user: UserCode, methods: list[Method], serves_http: bool) -> None:
    reply = describe(user)
    described = [
        (m.name, m.is_streaming, list(m.parameters), m.summary) for m in reply.callable_methods
    ]
    assert described == methods
    assert reply.serves_http is serves_http


def test_describe_runs_no_property() -> None:
    model = Model()
    describe(UserCode("Model", model, False))
    assert model.property_runs == 0
