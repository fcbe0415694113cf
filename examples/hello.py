"""The smallest Capstan app: `capstan run examples/hello.py`, then
`curl http://127.0.0.1:8000/`."""

from capstan import serve


@serve.deployment(route_prefix="/")
class Hello:
    def __call__(self, request):
        return "Hello from Capstan!\n"


serve.start()
Hello.deploy()
