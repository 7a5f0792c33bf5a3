"""Alarms and a dashboard, and where alarms go.

Alarms are rates over several periods where a count would page on one bad minute or stay silent
at high traffic: the API's 5xx rate, the agents' error rate, each function's error rate. Beside
them: API p99 latency, each function's duration near its timeout and its throttles, orchestrate's
concurrency near its reserved limit, the cache's processing units, memory and throttled commands
against their limits, and the archive (calls the sweeper could not archive, how far behind it is,
whether it runs at all). Every alarm notifies the alarm topic (an e-mail address subscribed to a
topic of the stack's, and/or an existing topic); outside dev the config refuses a stack whose
alarms would reach no one."""

from __future__ import annotations

from collections.abc import Callable

from aws_cdk import Acknowledgment, ArnFormat, Duration, Stack, Token, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.api import Api
from infra.cache import SessionCache
from infra.config import ConfigError, StackConfig
from infra.functions import FUNCTIONS, LIVE, SERVICE, SWEEPER, Functions, metrics_namespace

ONE_MINUTE = Duration.minutes(1)
FIVE_MINUTES = Duration.minutes(5)
# Alarm before a limit (the cache's, a function's timeout or reserved concurrency) is reached.
LIMIT_SHARE = 0.8
# A rate alarms when it is above its threshold in 3 of 5 one-minute periods (a canary deploy's
# five minutes can see it), and only in minutes with this many requests: two errors out of
# three requests are not an outage.
RATE_PERIODS, RATE_DATAPOINTS, RATE_MIN_COUNT = 5, 3, 20
# A canary's minute counts with fewer turns: it has a tenth of the traffic.
CANARY_MIN_COUNT = 5
API_5XX_PERCENT = 5.0
FUNCTION_ERROR_PERCENT = 5.0
AGENT_ERROR_PERCENT = 10.0
GE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


def rate(errors: cloudwatch.IMetric, total: cloudwatch.IMetric, label: str,
         min_count: int = RATE_MIN_COUNT) -> cloudwatch.MathExpression:
    """errors / total in percent, in each minute with at least min_count of total (else 0)."""
    return cloudwatch.MathExpression(
        expression=f"IF(total >= {min_count}, 100 * errors / total, 0)",
        using_metrics={"errors": errors, "total": total}, label=label, period=ONE_MINUTE)


class Monitoring(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, api: Api,
                 functions: Functions, cache: SessionCache) -> None:
        super().__init__(scope, id)
        namespace = metrics_namespace(config)
        cache_dims = {"clusterId": cache.cache.serverless_cache_name}
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(name: str, metric: cloudwatch.IMetric, threshold: float, what: str, *,
                  periods: int = 1, datapoints: int | None = None,
                  missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
                  ) -> cloudwatch.Alarm:
            self.alarms[name] = cloudwatch.Alarm(
                self, name, metric=metric, threshold=threshold, evaluation_periods=periods,
                datapoints_to_alarm=datapoints, comparison_operator=GE, treat_missing_data=missing,
                alarm_description=f"Orchestrator Flows {config.stage}: {what}")
            return self.alarms[name]

        def own(metric: str, statistic: str, period: Duration = ONE_MINUTE) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=namespace, metric_name=metric,
                                     dimensions_map={"service": SERVICE}, statistic=statistic,
                                     period=period)

        http_api = api.http_api
        alarm("Api5xxRate", rate(http_api.metric_server_error(period=ONE_MINUTE, statistic="Sum"),
                                 http_api.metric_count(period=ONE_MINUTE, statistic="Sum"),
                                 "API 5xx %"),
              API_5XX_PERCENT, f"API answered 5xx to {API_5XX_PERCENT:g} % or more of requests",
              periods=RATE_PERIODS, datapoints=RATE_DATAPOINTS)
        alarm("ApiLatencyP99", http_api.metric_latency(period=FIVE_MINUTES, statistic="p99"),
              config.latency_alarm_ms, "API p99 latency (ms)", periods=3)
        alarm("AgentErrorRate", rate(own("AgentErrors", "Sum"), own("AgentCalls", "Sum"),
                                     "agent error %"),
              AGENT_ERROR_PERCENT, f"{AGENT_ERROR_PERCENT:g} % or more of agent calls failed",
              periods=RATE_PERIODS, datapoints=RATE_DATAPOINTS)
        for spec in FUNCTIONS:
            function = functions.by_name[spec.name]
            timeout = functions.timeout_seconds[spec.name]
            if spec.name == SWEEPER:  # a dozen runs an hour: every failed run counts
                alarm("SweeperErrors", function.metric_errors(period=FIVE_MINUTES,
                                                              statistic="Sum"),
                      1, "sweeper runs that failed")
            else:  # (the sweeper has no duration alarm: it runs to its timeout on purpose
                # when calls pile up, and ArchiveLag watches it)
                alarm(f"ErrorRate-{spec.name}",
                      rate(function.metric_errors(period=ONE_MINUTE, statistic="Sum"),
                           function.metric_invocations(period=ONE_MINUTE, statistic="Sum"),
                           f"{spec.name} error %"),
                      FUNCTION_ERROR_PERCENT,
                      f"{spec.name}: {FUNCTION_ERROR_PERCENT:g} % or more of invocations failed "
                      "(crashed, timed out, or failed to start)",
                      periods=RATE_PERIODS, datapoints=RATE_DATAPOINTS)
                alarm(f"Duration-{spec.name}",
                      function.metric_duration(period=FIVE_MINUTES, statistic="p99"),
                      timeout * 1000 * LIMIT_SHARE,
                      f"{spec.name}: p99 duration at {LIMIT_SHARE:.0%} of its {timeout} s "
                      "timeout", periods=3, datapoints=2)
            alarm(f"Throttles-{spec.name}",
                  function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"), 1,
                  f"{spec.name} invocations throttled")
        self._canary(config, functions, namespace, alarm)
        if config.reserved_concurrency is not None:
            alarm("ConcurrencyNearLimit", functions.by_name["orchestrate"].metric(
                "ConcurrentExecutions", period=ONE_MINUTE, statistic="Maximum"),
                  config.reserved_concurrency * LIMIT_SHARE,
                  f"orchestrate at {LIMIT_SHARE:.0%} of its reserved concurrency "
                  f"({config.reserved_concurrency})", periods=5, datapoints=3)

        def cache_metric(name: str, statistic: str, period: Duration) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ElastiCache", metric_name=name,
                                     dimensions_map=cache_dims, statistic=statistic,
                                     period=period)

        alarm("CacheProcessingUnits", cache_metric("ElastiCacheProcessingUnits", "Sum",
                                                   ONE_MINUTE),
              config.cache_max_ecpu_per_second * 60 * LIMIT_SHARE,
              "cache ECPUs per minute near the configured limit", periods=3, datapoints=2)
        alarm("CacheMemory", cache_metric("BytesUsedForCache", "Maximum", FIVE_MINUTES),
              config.cache_max_data_gb * 1024**3 * LIMIT_SHARE,
              "cache data near the configured limit")
        alarm("CacheThrottled", cache_metric("ThrottledCmds", "Sum", FIVE_MINUTES), 1,
              "the cache throttled commands (its ECPU limit was reached)")

        sweep = Duration.minutes(max(5, config.sweep_minutes))
        # Calls the archive could not take in two runs in a row: they stay in Redis, kept alive,
        # until it can (DynamoDB down or throttled, or a conflicting trail).
        alarm("ArchiveFailures", own("ArchiveFailures", "Sum", sweep), 1,
              "calls the sweeper could not archive (kept alive in Redis until it can)", periods=2)
        # How long the oldest due call has waited, half the time between falling due (idle) and
        # the session TTL; no figure at all means the sweeper does not run: that alarms too.
        lag_limit = (config.session_ttl_seconds - config.archive_idle_seconds) // 2
        alarm("ArchiveLag", own("ArchiveLagSeconds", "Maximum", sweep), lag_limit,
              f"the sweeper is {lag_limit} s or more behind, or has not run", periods=2,
              missing=cloudwatch.TreatMissingData.BREACHING)

        self.topics = self._topics(config)
        for topic in self.topics:
            for each in self.alarms.values():
                each.add_alarm_action(actions.SnsAction(topic))
        self.dashboard = self._dashboard(config, namespace, api, cache_dims)

    def _canary(self, config: StackConfig, functions: Functions, namespace: str,
                alarm: Callable[..., cloudwatch.Alarm]) -> None:
        """The version being deployed, alone: its 5xx rate and its crashes. The API's and the
        function's rates mix it with the version it replaces (at 10 % of traffic it would have
        to fail half its turns to move them); these watch exactly the new version (its number
        is in their dimensions, updated before the alias moves), in one-minute periods that a
        five-minute canary sees."""
        function = functions.by_name["orchestrate"]
        version = functions.live["orchestrate"].version.version
        by_version = {"FunctionName": function.function_name,
                      "Resource": f"{function.function_name}:{LIVE}", "ExecutedVersion": version}
        invocations = cloudwatch.Metric(namespace="AWS/Lambda", metric_name="Invocations",
                                        dimensions_map=by_version, statistic="Sum",
                                        period=ONE_MINUTE)
        server_errors = cloudwatch.Metric(
            namespace=namespace, metric_name="ServerErrors", statistic="Sum", period=ONE_MINUTE,
            dimensions_map={"service": SERVICE, "function": function.function_name,
                            "version": version})
        alarm("CanaryServerErrors",
              rate(server_errors, invocations, "new version 5xx %", CANARY_MIN_COUNT),
              API_5XX_PERCENT,
              f"the orchestrate version being deployed answered 5xx to {API_5XX_PERCENT:g} % or "
              "more of its turns", periods=2, datapoints=2)
        alarm("CanaryCrashes", cloudwatch.Metric(
            namespace="AWS/Lambda", metric_name="Errors", dimensions_map=by_version,
            statistic="Sum", period=ONE_MINUTE), 1,
              "the orchestrate version being deployed crashed or timed out")

    def _topics(self, config: StackConfig) -> list[sns.ITopic]:
        topics: list[sns.ITopic] = []
        if config.alarm_email is not None:
            topic = sns.Topic(self, "AlarmTopic", enforce_ssl=True,
                              display_name=f"Orchestrator Flows {config.stage} alarms")
            # enforce_ssl gives the topic a policy of its own, holding only its Deny: that
            # replaces SNS's default policy, so nothing would allow CloudWatch to publish and
            # every alarm action would fail. Allow it, for this account's alarms only.
            stack = Stack.of(self)
            topic.add_to_resource_policy(iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"], resources=[topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": stack.format_arn(
                        service="cloudwatch", resource="alarm", resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME)},
                }))
            topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
            Validations.of(topic).acknowledge(Acknowledgment(
                id="AwsSolutions::AwsSolutions-SNS2",
                reason="Alarm notifications carry no call data, and CloudWatch cannot publish to "
                       "a topic encrypted with the AWS-managed aws/sns key."))
            topics.append(topic)
        if config.alarm_topic_arn is not None:
            region = config.alarm_topic_arn.split(":")[3]
            stack_region = Stack.of(self).region
            if not Token.is_unresolved(stack_region) and region != stack_region:
                raise ConfigError(f"alarmTopicArn is in {region}: an alarm can notify a topic "
                                  f"of its own region only ({stack_region})")
            topics.append(sns.Topic.from_topic_arn(self, "PagerTopic", config.alarm_topic_arn))
        return topics

    def _dashboard(self, config: StackConfig, namespace: str, api: Api,
                   cache_dims: dict[str, str]) -> cloudwatch.Dashboard:
        def per(metric: str, dimension: str, statistic: str) -> cloudwatch.MathExpression:
            return cloudwatch.MathExpression(
                expression=(f"SEARCH('{{{namespace},service,{dimension}}} "
                            f"MetricName=\"{metric}\"', '{statistic}', 60)"),
                using_metrics={}, label=f"{metric} by {dimension}", period=ONE_MINUTE)

        def own(metric: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=namespace, metric_name=metric,
                                     dimensions_map={"service": SERVICE}, statistic=statistic,
                                     period=ONE_MINUTE)

        dashboard = cloudwatch.Dashboard(self, "Dashboard",
                                         dashboard_name=f"orchestrator-flows-{config.stage}")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Step latency (ms)", width=12,
                                   left=[own("StepLatency", "p50"), own("StepLatency", "p99")]),
            cloudwatch.GraphWidget(title="Agent latency p50 (ms)", width=12,
                                   left=[per("AgentLatency", "agent", "p50")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Stages advanced, calls completed", width=8,
                                   left=[own("StageAdvanced", "Sum"),
                                         own("CallsCompleted", "Sum")]),
            cloudwatch.GraphWidget(title="Agent errors", width=8,
                                   left=[per("AgentErrors", "agent,kind", "Sum")]),
            cloudwatch.GraphWidget(title="Steps rejected", width=8,
                                   left=[per("StepsRejected", "code", "Sum")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Archive", width=12,
                                   left=[own("ArchivedCalls", "Sum"), own("CallsGone", "Sum"),
                                         own("ArchiveFailures", "Sum"),
                                         own("ArchiveKeptAlive", "Sum")]),
            cloudwatch.GraphWidget(title="Archive lag (s)", width=12,
                                   left=[own("ArchiveLagSeconds", "Maximum")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API", width=12,
                left=[api.http_api.metric_count(period=ONE_MINUTE),
                      api.http_api.metric_client_error(period=ONE_MINUTE),
                      api.http_api.metric_server_error(period=ONE_MINUTE)]),
            cloudwatch.GraphWidget(
                title="Session cache", width=12,
                left=[cloudwatch.Metric(namespace="AWS/ElastiCache",
                                        metric_name="ElastiCacheProcessingUnits",
                                        dimensions_map=cache_dims, statistic="Sum")],
                right=[cloudwatch.Metric(namespace="AWS/ElastiCache",
                                         metric_name="BytesUsedForCache",
                                         dimensions_map=cache_dims, statistic="Maximum")]),
        )
        return dashboard
