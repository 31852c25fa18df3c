"""The partner-side role (deploy/partner-role.yaml) allows exactly the AWS calls the actions make.

The calls are derived from the code, not listed by hand: an AST walk over bot/actions/*.py finds
every boto3 client the actions create (`ctx.aws.client("svc")`, directly or through a name bound
to it) and every operation called on one, follows each action class through the helpers it calls,
and maps `client("svc").some_operation(` to the IAM action `svc:SomeOperation`. A new call in an
action without the permission in the role (or a permission nothing uses any more) fails here.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.local.template import TEMPLATE_PATH, _CfnLoader, load_template

REPO = TEMPLATE_PATH.parent
ACTIONS = REPO / "bot" / "actions"
ROLE_TEMPLATE = REPO / "deploy" / "partner-role.yaml"
ROLE = yaml.load(ROLE_TEMPLATE.read_text(), Loader=_CfnLoader)
# boto3 service name -> IAM service prefix. A service missing here fails the test: add its prefix.
IAM_PREFIX = {"dynamodb": "dynamodb", "cloudwatch": "cloudwatch", "sqs": "sqs", "sts": "sts"}
# Client methods that are not API operations (get_paginator/get_waiter name theirs in an argument).
NOT_OPERATIONS = {"can_paginate", "close", "generate_presigned_url", "get_paginator", "get_waiter"}
# IAM actions that support no resource-level permissions: the only ones allowed on "*".
UNSCOPED = {"cloudwatch:GetMetricData", "sts:GetCallerIdentity"}
CHANGES = ("Put", "Update", "Delete", "Create", "Batch", "Send", "Purge", "Set", "Tag", "Untag", "Restore")


# -- the calls the actions make --------------------------------------------------------------------


@dataclass
class Function:
    module: str
    owner: str  # class name, "" for a module-level function
    calls: set[tuple[str, str]] = field(default_factory=set)  # (service, operation)
    callees: set[tuple[str, str]] = field(default_factory=set)  # ("self", method) | ("", function)


# SQS batch calls are authorized by their single-message action (IAM has no *Batch actions).
BATCH_AUTHORIZED_BY = {
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "SendMessageBatch": "SendMessage",
}


def pascal(operation: str) -> str:
    name = "".join(part[:1].upper() + part[1:] for part in operation.split("_"))
    return BATCH_AUTHORIZED_BY.get(name, name)


def client_service(node: ast.AST) -> str | None:
    """`<anything>.client("svc")` -> "svc"."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client":
        (argument,) = node.args
        assert isinstance(argument, ast.Constant) and isinstance(argument.value, str), (
            f"line {node.lineno}: a client whose service is not a literal cannot be checked"
        )
        return argument.value
    return None


def bound_clients(tree: ast.Module, path: Path) -> dict[str, str]:
    """Names bound to a client anywhere in the module (`client = ctx.aws.client("dynamodb")`)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and (service := client_service(node.value)):
            for target in node.targets:
                assert isinstance(target, ast.Name), (
                    f"{path.name}:{node.lineno}: bind a client to a plain name"
                )
                assert names.setdefault(target.id, service) == service, (
                    f"{path.name}:{node.lineno}: {target.id} names two services; use one name per service"
                )
    return names


def collect(path: Path) -> dict[tuple[str, str, str], Function]:
    """(module, class, function) -> the calls it makes and the functions it calls."""
    tree = ast.parse(path.read_text(), filename=str(path))
    clients = bound_clients(tree, path)
    module = path.stem
    found: dict[tuple[str, str, str], Function] = {}

    def visit(node: ast.FunctionDef, owner: str) -> None:
        function = found.setdefault((module, owner, node.name), Function(module, owner))
        for call in ast.walk(node):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            if isinstance(func, ast.Name):
                function.callees.add(("", func.id))
                continue
            if not isinstance(func, ast.Attribute):
                continue
            if isinstance(func.value, ast.Name) and func.value.id == "self":
                function.callees.add(("self", func.attr))
            receiver = func.value
            service = client_service(receiver)
            if service is None and isinstance(receiver, ast.Name):
                service = clients.get(receiver.id)
            if service is None:
                continue
            operation = func.attr
            if operation in {"get_paginator", "get_waiter"}:
                (argument,) = call.args
                assert isinstance(argument, ast.Constant), f"{path.name}:{call.lineno}: literal operation"
                operation = str(argument.value)
            if operation not in NOT_OPERATIONS:
                function.calls.add((service, operation))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            visit(node, "")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    visit(item, node.name)
    return found


def action_classes(path: Path) -> dict[str, str]:
    """Class name -> the action name it registers (classes with a literal `name = "..."`)."""
    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and [t.id for t in item.targets if isinstance(t, ast.Name)] == ["name"]
                    and isinstance(item.value, ast.Constant)
                ):
                    found[node.name] = str(item.value.value)
    return found


def calls_by_action() -> dict[str, set[str]]:
    """Registered action name -> the IAM actions of every call it can reach."""
    functions: dict[tuple[str, str, str], Function] = {}
    classes: dict[tuple[str, str], str] = {}
    for path in sorted(ACTIONS.glob("*.py")):
        functions |= collect(path)
        classes |= {(path.stem, c): name for c, name in action_classes(path).items()}
    top_level: dict[str, list[tuple[str, str, str]]] = {}
    for key in functions:
        if key[1] == "":
            top_level.setdefault(key[2], []).append(key)

    def resolve(caller: tuple[str, str, str], callee: tuple[str, str]) -> list[tuple[str, str, str]]:
        kind, name = callee
        if kind == "self":
            key = (caller[0], caller[1], name)
            return [key] if key in functions else []
        candidates = top_level.get(name, [])
        same_module = [k for k in candidates if k[0] == caller[0]]
        # A helper imported from another actions module: names are unique across bot/actions.
        return same_module or candidates

    derived: dict[str, set[str]] = {}
    for (module, cls), action in classes.items():
        todo = [k for k in functions if k[:2] == (module, cls)]
        seen: set[tuple[str, str, str]] = set()
        iam: set[str] = set()
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            for service, operation in functions[key].calls:
                assert service in IAM_PREFIX, f"add the IAM prefix of boto3 service {service!r} to IAM_PREFIX"
                iam.add(f"{IAM_PREFIX[service]}:{pascal(operation)}")
            for callee in functions[key].callees:
                todo += resolve(key, callee)
        derived[action] = iam
    return derived


DERIVED = calls_by_action()
USED = set().union(*DERIVED.values())


# -- the role ---------------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements() -> list[dict[str, Any]]:
    (policy,) = ROLE["Resources"]["RunbookBotRole"]["Properties"]["Policies"]
    found = []
    for statement in policy["PolicyDocument"]["Statement"]:
        if isinstance(statement, dict) and "Fn::If" in statement:
            condition, when_true, when_false = statement["Fn::If"]
            assert when_false == {"Ref": "AWS::NoValue"}, "a conditional statement is present or absent"
            found.append({**when_true, "_condition": condition})
        else:
            found.append(statement)
    return found


def allowed() -> set[str]:
    return {a for s in role_statements() for a in as_list(s["Action"])}


def evaluate(value: Any, parameters: dict[str, Any]) -> Any:
    """Enough of CloudFormation's intrinsics to see which ARNs a statement names."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, argument),) = value.items()
        if kind == "Ref":
            return parameters[argument]
        if kind == "Fn::Join":
            return argument[0].join(str(evaluate(v, parameters)) for v in evaluate(argument[1], parameters))
        if kind == "Fn::Split":
            return str(evaluate(argument[1], parameters)).split(argument[0])
        if kind == "Fn::Sub":
            text = argument
            for name, replacement in parameters.items():
                text = text.replace("${" + name + "}", str(replacement))
            return text
    if isinstance(value, list):
        return [evaluate(v, parameters) for v in value]
    return value


SAMPLE = {
    "TableNames": ["acme-orders", "acme-orders-drill", "acme-failed-writes"],
    "QueueNames": ["globex-missed-writes", "globex-missed-writes-drill"],
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "111122223333",
}


def grants(action: str, arn: str) -> bool:
    for statement in role_statements():
        if action in as_list(statement["Action"]):
            resources = evaluate(statement["Resource"], SAMPLE)
            if any(fnmatch.fnmatchcase(arn, pattern) for pattern in as_list(resources)):
                return True
    return False


def table(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:111122223333:table/{name}"


# -- what the derivation finds -------------------------------------------------------------------------


def test_the_derivation_sees_every_registered_action_that_touches_aws():
    from bot.actions.base import REGISTRY

    assert set(DERIVED) <= set(REGISTRY), "every class with a name is a registered action"
    touching = {name for name, calls in DERIVED.items() if calls}
    assert {"dynamodb.describe", "cloudwatch.metrics", "dynamodb.replay", "dynamodb.set_capacity"} <= touching
    assert DERIVED["check"] == set() and DERIVED["wait"] == set(), "core actions make no AWS call"


def test_the_derivation_follows_actions_through_their_helpers():
    # set_capacity reads through describe_table(); replay reads its store through store_records();
    # preflight counts missed writes through _count_missed() in another module's helper.
    assert {"dynamodb:DescribeTable", "dynamodb:UpdateTable"} <= DERIVED["dynamodb.set_capacity"]
    assert {"dynamodb:PutItem", "sqs:ReceiveMessage", "sqs:DeleteMessage"} <= DERIVED["dynamodb.replay"]
    assert {"sts:GetCallerIdentity", "sqs:GetQueueAttributes"} <= DERIVED["preflight"]
    assert "cloudwatch:GetInsightRuleReport" in DERIVED["dynamodb.hot_keys"]


def test_only_high_risk_actions_change_anything():
    from bot.actions.base import REGISTRY

    for name, calls in DERIVED.items():
        changes = {c for c in calls if c.split(":")[1].startswith(CHANGES)}
        if not REGISTRY[name].always_high_risk:
            assert changes == set(), f"{name} is not high risk, yet it calls {sorted(changes)}"


def test_partner_clients_are_made_only_in_actions():
    """Everything the role must allow is called from bot/actions: no partner call hides elsewhere."""
    found = []
    for path in sorted((REPO / "bot").rglob("*.py")):
        if ACTIONS in path.parents or path.parent.name == "local":  # local: the embedded AWS's own clients
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = node.func.value
            partner_session = (isinstance(receiver, ast.Attribute) and receiver.attr == "aws") or (
                isinstance(receiver, ast.Call)
                and isinstance(receiver.func, ast.Attribute)
                and receiver.func.attr in {"get", "for_run"}
                and ast.unparse(receiver.func.value).endswith("sessions")
            )
            if node.func.attr == "client" and partner_session:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


# -- the role allows them, and nothing more ---------------------------------------------------------


def test_the_role_allows_exactly_the_calls_the_actions_make():
    assert allowed() - USED == set(), "permissions no action uses"
    assert USED - allowed() == set(), "calls the role does not allow: the step would fail AccessDenied"


def test_no_statement_uses_a_wildcard_action_or_denies():
    for statement in role_statements():
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, action


def test_only_actions_without_resource_level_permissions_are_allowed_on_every_resource():
    for statement in role_statements():
        if "*" in as_list(statement["Resource"]):
            assert set(as_list(statement["Action"])) <= UNSCOPED, statement["Sid"]


def test_table_permissions_reach_the_named_tables_and_their_indexes_only():
    for action in sorted(a for a in USED if a.startswith("dynamodb:")):
        assert grants(action, table("acme-orders")), action
        assert grants(action, table("acme-orders-drill")), action
        assert not grants(action, table("acme-orders-archive")), f"{action} on a table not named"
        assert not grants(action, table("acme")), action
    for action in ("dynamodb:Query", "dynamodb:Scan"):
        assert grants(action, table("acme-orders") + "/index/by-status"), action
    for action in ("dynamodb:PutItem", "dynamodb:UpdateTable"):
        assert not grants(action, table("acme-orders") + "/index/by-status"), action


def test_queue_permissions_reach_the_named_queues_only_and_only_when_there_are_queues():
    queue = "arn:aws:sqs:us-east-1:111122223333:{}"
    for action in sorted(a for a in USED if a.startswith("sqs:")):
        assert grants(action, queue.format("globex-missed-writes")), action
        assert grants(action, queue.format("globex-missed-writes-drill")), action
        assert not grants(action, queue.format("globex-orders")), action
    (sqs,) = [s for s in role_statements() if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
    assert sqs["_condition"] == "HasQueues"
    assert ROLE["Conditions"]["HasQueues"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "QueueNames"}]}, ""]}]
    }


def test_scoped_statements_are_pinned_to_the_stacks_region():
    for statement in role_statements():
        resources = evaluate(statement["Resource"], SAMPLE)
        if any(":*:*:" in r for r in as_list(resources)) or "*" in as_list(statement["Resource"]):
            if set(as_list(statement["Action"])) <= {"sts:GetCallerIdentity"}:
                continue  # STS answers who the caller is, wherever it is asked
            condition = statement["Condition"]["StringEquals"]
            assert condition["aws:RequestedRegion"] == {"Ref": "AWS::Region"}, statement["Sid"]


def test_the_role_trusts_only_the_bots_roles():
    role = ROLE["Resources"]["RunbookBotRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Effect": "Allow",
        "Principal": {"AWS": {"Ref": "BotRoleArns"}},
        "Action": "sts:AssumeRole",
    }
    assert "Default" not in ROLE["Parameters"]["BotRoleArns"], "the bot's roles are always named"
    assert role["MaxSessionDuration"] >= 3600, "the bot asks for one-hour sessions"
    bot = yaml.load(TEMPLATE_PATH.read_text(), Loader=_CfnLoader)
    assuming = sorted(
        f"{f}Role"
        for f, props in load_template().functions().items()
        for policy in props.get("Policies") or []
        for statement in as_list(policy.get("Statement", []))
        if "sts:AssumeRole" in as_list(statement["Action"])
    )
    named = sorted(
        o["Value"]["Fn::GetAtt"][0]
        for n, o in bot["Outputs"].items()
        if n.endswith("RoleArn") and "Fn::GetAtt" in (o.get("Value") or {})
    )
    assert named == assuming, (
        "BotRoleArns are the bot stack's outputs for every role that assumes partner roles"
    )


# -- the partner's alarms reach the bot ---------------------------------------------------------------


def test_the_partner_forwards_exactly_what_the_alarm_function_listens_for():
    (bot_rule,) = [
        e["Properties"]
        for e in load_template().functions()["AlarmFunction"]["Events"].values()
        if e["Type"] == "EventBridgeRule"
    ]
    rule = ROLE["Resources"]["AlarmForwardingRule"]
    assert rule["Condition"] == "ForwardAlarms"
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == bot_rule["Pattern"]["source"]
    assert pattern["detail-type"] == bot_rule["Pattern"]["detail-type"]
    assert pattern["detail"]["state"] == bot_rule["Pattern"]["detail"]["state"], "only what starts a runbook"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": "BotEventBusArn"}
    assert target["RoleArn"] == {"Fn::GetAtt": ["AlarmForwardingRole", "Arn"]}


def test_the_forwarding_role_may_only_put_events_on_the_bots_bus():
    role = ROLE["Resources"]["AlarmForwardingRole"]
    assert role["Condition"] == "ForwardAlarms"
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    (policy,) = role["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert (statement["Action"], statement["Resource"]) == ("events:PutEvents", {"Ref": "BotEventBusArn"})


def test_the_bot_stack_names_the_bus_the_partner_template_forwards_to():
    bot = yaml.load(TEMPLATE_PATH.read_text(), Loader=_CfnLoader)
    bus = bot["Outputs"]["AlarmEventBusArn"]["Value"]["Fn::Sub"]
    (policy,) = [
        r["Properties"] for r in bot["Resources"].values() if r["Type"] == "AWS::Events::EventBusPolicy"
    ]
    assert policy["Statement"]["Resource"]["Fn::Sub"] == bus
    assert bus.endswith(f":event-bus/{policy['EventBusName']}")


@pytest.mark.parametrize("partner", sorted(p.stem for p in (REPO / "runbooks" / "partners").glob("*.yaml")))
def test_every_table_and_store_a_shipped_partner_file_names_is_a_name_the_role_can_take(partner):
    """The partner's TableNames/QueueNames come straight from its file: each is a bare name."""
    data = yaml.safe_load((REPO / "runbooks" / "partners" / f"{partner}.yaml").read_text())
    names = [t["name"] for t in data["tables"].values()] + list((data.get("drill_target") or {}).values())
    store = data.get("failed_requests") or {}
    if store:
        names.append(store["name"])
    for name in names:
        assert name and "," not in name and ":" not in name and "/" not in name, name
    tables = [n for n in names if not (store.get("kind") == "sqs" and n.startswith(store["name"]))]
    sample = {**SAMPLE, "TableNames": tables}
    (reads,) = [s for s in role_statements() if "dynamodb:Query" in as_list(s["Action"])]
    arns = evaluate(reads["Resource"], sample)
    for name in tables:
        assert any(fnmatch.fnmatchcase(table(name), a) for a in arns), name
