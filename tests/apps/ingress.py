"""A FastAPI class-based ingress, as `serve.ingress(app)` leaves it."""

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app):
    yield {"started": True}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    count: int = 1


class Greeter:
    __capstan_asgi_app__ = app

    def __init__(self, greeting: str = "Hello") -> None:
        self.greeting = greeting

    @app.get("/hi/{name}")
    def hi(self, name: str, loud: bool = False) -> dict:
        text = f"{self.greeting} {name}"
        return {"text": text.upper() if loud else text}

    @app.post("/items")
    async def add(self, item: Item) -> dict:
        return {"greeting": self.greeting, "name": item.name, "count": item.count}


@app.get("/state")
async def state(request: Request) -> dict:
    return {"started": request.state.started}
