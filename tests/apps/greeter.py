"""A deployment given by import path, for clients in other languages."""


class Greeter:
    def __init__(self, greeting: str = "Hello") -> None:
        self.greeting = greeting

    def greet(self, name: str, punctuation: str = "!") -> str:
        return f"{self.greeting}, {name}{punctuation}"

    def __call__(self, request) -> str:
        return self.greeting
