"""The deployment the scripted executor's control-plane tests run: it takes
any user_config and answers with the one it has."""


class Hello:
    def __init__(self) -> None:
        self.config = None

    def reconfigure(self, config) -> None:
        self.config = config

    def __call__(self, request) -> dict:
        return {"config": self.config}
