"""The HTTP API: the eight routes to their functions, IAM authorization by default (a JWT
authorizer when the context names an issuer), throttling on the default stage, JSON access logs,
CORS only when origins are configured."""

from __future__ import annotations

import json

import jsii
from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StackConfig
from infra.functions import FUNCTIONS, Functions

Field = apigw.AccessLogField
# One JSON object per request, each value one of API Gateway's $context variables (CDK's names
# for them: a typo is an AttributeError at synth, not a silently empty field in every line).
ACCESS_LOG_FIELDS = {
    "requestId": Field.context_request_id(),
    "ip": Field.context_identity_source_ip(),
    "requestTime": Field.context_request_time(),
    "httpMethod": Field.context_http_method(),
    "routeKey": Field.context_route_key(),
    "status": Field.context_status(),
    "protocol": Field.context_protocol(),
    "responseLength": Field.context_response_length(),
    "integrationLatency": Field.context_integration_latency(),
    "integrationError": Field.context_integration_error_message(),
    "authorizerError": Field.context_authorizer_error(),
    "caller": Field.context_identity_caller(),
    # the Lambda invocation's request id (HTTP APIs have no X-Ray trace id of their own)
    "lambdaRequestId": Field.context_aws_endpoint_request_id(),
}


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogs:
    """HttpStage takes its access-log settings only as an object implementing the interface."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":")))


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig,
                 functions: Functions) -> None:
        super().__init__(scope, id)
        authorizer: apigwv2.IHttpRouteAuthorizer
        if config.jwt_issuer is not None:
            authorizer = authorizers.HttpJwtAuthorizer(
                "Jwt", config.jwt_issuer, jwt_audience=config.jwt_audience)
        else:
            authorizer = authorizers.HttpIamAuthorizer()
        cors = None
        if config.cors_allow_origins:
            cors = apigwv2.CorsPreflightOptions(
                allow_origins=config.cors_allow_origins,
                allow_methods=[apigwv2.CorsHttpMethod.GET, apigwv2.CorsHttpMethod.POST,
                               apigwv2.CorsHttpMethod.DELETE],
                allow_headers=["content-type", "authorization", "idempotency-key",
                               "x-amz-date", "x-amz-security-token"],
                max_age=Duration.hours(1))
        self.http_api = apigwv2.HttpApi(
            self, "HttpApi", api_name=f"orchestrator-flows-{config.stage}",
            description="Orchestrator Flows: multi-stage call flows over A2A",
            default_authorizer=authorizer, create_default_stage=False, cors_preflight=cors)
        self.access_logs = logs.LogGroup(self, "AccessLogs",
                                         retention=config.log_retention,
                                         removal_policy=config.logs_removal)
        self.stage = apigwv2.HttpStage(
            self, "DefaultStage", http_api=self.http_api, stage_name="$default", auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=config.throttle_rate_limit,
                                              burst_limit=config.throttle_burst_limit),
            access_log_settings=_AccessLogs(self.access_logs))
        for spec in (spec for spec in FUNCTIONS if spec.routes):
            integration = integrations.HttpLambdaIntegration(
                f"{spec.name}-integration", functions.live[spec.name])
            for method, path in spec.routes:
                self.http_api.add_routes(path=path, methods=[apigwv2.HttpMethod(method)],
                                         integration=integration)

    @property
    def url(self) -> str:
        return self.stage.url
