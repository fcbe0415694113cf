"""An HTTP deployment answering with every kind of result a handler may return."""

from starlette.responses import Response, StreamingResponse


class Responses:
    async def __call__(self, request):
        kind = request.url.path.rsplit("/", 1)[-1]
        return await getattr(self, kind)(request)

    async def text(self, request):
        return "hello"

    async def bytes(self, request):
        return b"\x00\x01"

    async def json(self, request):
        return {"a": [1, 2], "b": None}

    async def response(self, request):
        return Response("created", 201, {"x-custom": "yes"}, media_type="text/plain")

    async def streaming(self, request):
        async def chunks():
            for i in range(3):
                yield f"chunk{i};"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def generator(self, request):
        def chunks():
            yield "a"
            yield "b"

        return chunks()

    async def fail(self, request):
        raise RuntimeError("do not leak this")

    async def unrenderable(self, request):
        return object()
