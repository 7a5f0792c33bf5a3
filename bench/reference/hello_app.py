"""The reference Lambda function cold starts are compared with: FastAPI + Mangum + Powertools
Logger and Metrics, one route, nothing else."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from fastapi import FastAPI
from mangum import Mangum

logger = Logger(service="hello")
metrics = Metrics(namespace="Hello", service="hello")
app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


adapter = Mangum(app, lifespan="off")


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = adapter(event, context)
    return response
