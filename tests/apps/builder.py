"""An app builder and a graph, for `capstan run module:builder key=value`."""

from capstan import serve


@serve.deployment
class Greeting:
    def __init__(self, word: str) -> None:
        self.word = word

    def get(self) -> str:
        return self.word


@serve.deployment
class Greeter:
    def __init__(self, greeting, name: str) -> None:
        self.greeting = greeting
        self.name = name

    async def __call__(self, request) -> str:
        return f"{await self.greeting.get.remote()}, {self.name}"


def app_builder(args: dict[str, str]):
    return Greeter.bind(Greeting.bind(args.get("greeting", "Hello")), args.get("name", "you"))


app = Greeter.bind(Greeting.bind("Hi"), "graph")
