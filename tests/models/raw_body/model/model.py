import fastapi


class Model:
    async def predict(self, request: fastapi.Request):
        body = await request.body()
        return {"length": len(body), "content_type": request.headers.get("content-type")}
