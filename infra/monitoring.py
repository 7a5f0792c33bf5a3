"""Alarms and a dashboard: API 5xx and p99 latency, agent errors, Lambda throttles, the cache's
processing units and memory against their limits, the archive (calls the sweeper could not
archive, how far behind it is, whether it runs at all), and the Powertools metrics the functions
emit. Alarms notify an SNS topic when the context names an e-mail address."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.api import Api
from infra.cache import SessionCache
from infra.config import StackConfig
from infra.functions import SERVICE, SWEEPER, Functions, metrics_namespace

FIVE_MINUTES = Duration.minutes(5)
# Alarm before the cache's own limits throttle it.
CACHE_LIMIT_SHARE = 0.8


class Monitoring(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, api: Api,
                 functions: Functions, cache: SessionCache) -> None:
        super().__init__(scope, id)
        namespace = metrics_namespace(config)
        cache_dims = {"clusterId": cache.cache.serverless_cache_name}
        watched: dict[str, tuple[cloudwatch.IMetric, float, str]] = {
            "Api5xx": (api.http_api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
                       5, "API answered 5xx"),
            "ApiLatencyP99": (api.http_api.metric_latency(period=FIVE_MINUTES, statistic="p99"),
                              config.latency_alarm_ms, "API p99 latency (ms)"),
            "AgentErrors": (cloudwatch.Metric(
                namespace=namespace, metric_name="AgentErrors", dimensions_map={"service": SERVICE},
                statistic="Sum", period=FIVE_MINUTES), 10, "agent calls that failed"),
            "CacheProcessingUnits": (cloudwatch.Metric(
                namespace="AWS/ElastiCache", metric_name="ElastiCacheProcessingUnits",
                dimensions_map=cache_dims, statistic="Sum", period=Duration.minutes(1)),
                config.cache_max_ecpu_per_second * 60 * CACHE_LIMIT_SHARE,
                "cache ECPUs per minute near the configured limit"),
            "CacheMemory": (cloudwatch.Metric(
                namespace="AWS/ElastiCache", metric_name="BytesUsedForCache",
                dimensions_map=cache_dims, statistic="Maximum", period=FIVE_MINUTES),
                config.cache_max_data_gb * 1024**3 * CACHE_LIMIT_SHARE,
                "cache data near the configured limit"),
        }
        for name, function in functions.by_name.items():
            watched[f"Throttles-{name}"] = (
                function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"), 1,
                f"{name} invocations throttled")
        sweep = Duration.minutes(max(5, config.sweep_minutes))
        watched |= {
            # Calls the archive could not take in two runs in a row: they stay in Redis, kept
            # alive, until it can (DynamoDB down or throttled, or a conflicting trail).
            "ArchiveFailures": (cloudwatch.Metric(
                namespace=namespace, metric_name="ArchiveFailures",
                dimensions_map={"service": SERVICE}, statistic="Sum", period=sweep), 1,
                "calls the sweeper could not archive (kept alive in Redis until it can)"),
            "SweeperErrors": (functions.by_name[SWEEPER].metric_errors(
                period=sweep, statistic="Sum"), 1, "sweeper runs that failed"),
        }
        self.alarms = [
            cloudwatch.Alarm(self, name, metric=metric, threshold=threshold,
                             evaluation_periods=(3 if "Latency" in name
                                                 else 2 if name == "ArchiveFailures" else 1),
                             comparison_operator=(
                                 cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD),
                             treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                             alarm_description=f"Orchestrator Flows {config.stage}: {what}")
            for name, (metric, threshold, what) in watched.items()
        ]
        # How long the oldest due call has waited, half the time between falling due (idle)
        # and the session TTL; no figure at all means the sweeper does not run: that alarms too.
        lag_limit = (config.session_ttl_seconds - config.archive_idle_seconds) // 2
        self.alarms.append(cloudwatch.Alarm(
            self, "ArchiveLag", metric=cloudwatch.Metric(
                namespace=namespace, metric_name="ArchiveLagSeconds",
                dimensions_map={"service": SERVICE}, statistic="Maximum", period=sweep),
            threshold=lag_limit, evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            alarm_description=f"Orchestrator Flows {config.stage}: the sweeper is {lag_limit} s "
                              "or more behind, or has not run"))
        self.topic: sns.Topic | None = None
        if config.alarm_email is not None:
            self.topic = sns.Topic(self, "AlarmTopic", enforce_ssl=True,
                                   display_name=f"Orchestrator Flows {config.stage} alarms")
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
            for alarm in self.alarms:
                alarm.add_alarm_action(actions.SnsAction(self.topic))
            Validations.of(self.topic).acknowledge(Acknowledgment(
                id="AwsSolutions::AwsSolutions-SNS2",
                reason="Alarm notifications carry no call data, and CloudWatch cannot publish to "
                       "a topic encrypted with the AWS-managed aws/sns key."))
        self.dashboard = self._dashboard(config, namespace, api, cache_dims)

    def _dashboard(self, config: StackConfig, namespace: str, api: Api,
                   cache_dims: dict[str, str]) -> cloudwatch.Dashboard:
        def per(metric: str, dimension: str, statistic: str) -> cloudwatch.MathExpression:
            return cloudwatch.MathExpression(
                expression=(f"SEARCH('{{{namespace},service,{dimension}}} "
                            f"MetricName=\"{metric}\"', '{statistic}', 60)"),
                using_metrics={}, label=f"{metric} by {dimension}", period=Duration.minutes(1))

        def own(metric: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=namespace, metric_name=metric,
                                     dimensions_map={"service": SERVICE}, statistic=statistic,
                                     period=Duration.minutes(1))

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
                left=[api.http_api.metric_count(period=Duration.minutes(1)),
                      api.http_api.metric_client_error(period=Duration.minutes(1)),
                      api.http_api.metric_server_error(period=Duration.minutes(1))]),
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
