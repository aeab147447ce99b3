"""Routing rules: loading and validating the TOML file, first match wins, direct routes."""

from __future__ import annotations

import textwrap

import pytest

from tasks.routing import Route, Rule, Rules, RulesError, load_rules, route_from_product
from worker.config import DEFAULT_RULES_FILE


def write_rules(tmp_path, text: str):
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def example_rules() -> Rules:
    return load_rules(DEFAULT_RULES_FILE)


def test_example_rules_file_loads_every_rule_in_order(example_rules):
    # given the shipped example file
    # when it was loaded by the fixture
    names = [rule.name for rule in example_rules.rules]
    # then
    assert names == [
        "coniq-gift-card",
        "coniq-catalogue-voucher",
        "internal-gift-card",
        "internal-catalogue-voucher",
        "ignico-payout",
        "orders-platform-reward",
        "coniq-customer-events",
    ]
    assert example_rules.rules[-1].route is None  # the ignore rule


@pytest.mark.parametrize(
    ("source", "event_type", "fields", "expected"),
    [
        (
            "coniq",
            "reward.issued",
            {"offer_id": "1001", "reward_id": "rw_1"},
            Route("ifeelgoods", "coniq-gift-card", promotion_id=1, sku="APP-ITU-10USD-US"),
        ),
        (
            "coniq",
            "reward.issued",
            {"offer_id": "2002", "reward_id": "rw_2"},
            Route(
                "rewardops",
                "coniq-catalogue-voucher",
                program_id=12,
                item_order_token="tok-gift-25",
            ),
        ),
        (
            "internal",
            "reward.granted",
            {"reward_code": "GIFT10"},
            Route("ifeelgoods", "internal-gift-card", promotion_id=1, sku="APP-ITU-10USD-US"),
        ),
    ],
)
def test_example_rules_route_known_offers(example_rules, source, event_type, fields, expected):
    # given the example rules
    # when
    route = example_rules.route(source, event_type, fields)
    # then
    assert route == expected


@pytest.mark.parametrize(
    ("source", "event_type", "fields"),
    [
        ("coniq", "reward.issued", {"offer_id": "9999"}),  # no rule for this offer
        ("internal", "reward.issued", {"offer_id": "1001"}),  # rule is for coniq only
        ("coniq", "reward.granted", {"reward_code": "GIFT10"}),  # other event type
        ("coniq", "reward.issued", {}),  # nothing to match on
        ("coniq", "customer.created", {"id": "4711"}),  # deliberately ignored
    ],
)
def test_unmatched_or_ignored_units_route_to_none(example_rules, source, event_type, fields):
    # given the example rules
    # when
    route = example_rules.route(source, event_type, fields)
    # then
    assert route is None


def test_first_matching_rule_wins(tmp_path):
    # given two rules that both match, the more specific one second
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "any-offer"
        source = "coniq"
        event = "reward.issued"
        provider = "ifeelgoods"
        promotion_id = 1
        sku = "GENERIC"

        [[rule]]
        name = "offer-1001"
        source = "coniq"
        event = "reward.issued"
        match = { offer_id = "1001" }
        provider = "ifeelgoods"
        promotion_id = 2
        sku = "SPECIFIC"
        """,
    )
    rules = load_rules(path)
    # when
    route = rules.route("coniq", "reward.issued", {"offer_id": "1001"})
    # then the earlier rule decides
    assert route is not None
    assert (route.rule, route.sku) == ("any-offer", "GENERIC")


@pytest.mark.parametrize(
    ("fields", "expected_rule"),
    [
        ({"offer_id": "1001", "tier": "gold"}, "gold-1001"),
        ({"offer_id": "1001", "tier": "silver"}, "any-1001"),
        ({"offer_id": "1001"}, "any-1001"),
        ({"tier": "gold"}, None),
    ],
)
def test_rule_matches_only_when_all_its_fields_equal(tmp_path, fields, expected_rule):
    # given a rule on two fields before a rule on one, with an integer match value
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "gold-1001"
        event = "reward.issued"
        match = { offer_id = 1001, tier = "gold" }
        provider = "rewardops"
        program_id = 12
        item_order_token = "tok-gold"

        [[rule]]
        name = "any-1001"
        event = "reward.issued"
        match = { offer_id = "1001" }
        provider = "rewardops"
        program_id = 12
        item_order_token = "tok-any"
        """,
    )
    rules = load_rules(path)
    # when
    route = rules.route("coniq", "reward.issued", fields)
    # then
    assert (route.rule if route else None) == expected_rule


def test_wildcard_source_and_event_match_anything(tmp_path):
    # given a catch-all rule
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "catch-all"
        source = "*"
        event = "*"
        provider = "ifeelgoods"
        promotion_id = 3
        sku = "ANY"
        """,
    )
    rules = load_rules(path)
    # when
    routes = [
        rules.route("coniq", "points.updated", {}),
        rules.route("internal", "reward.granted", {"x": "y"}),
    ]
    # then
    assert [r.rule if r else None for r in routes] == ["catch-all", "catch-all"]


def test_ignore_rule_stops_later_rules_from_matching(tmp_path):
    # given an ignore rule before a fulfil rule for the same event
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "skip-test-offers"
        source = "coniq"
        event = "reward.issued"
        match = { offer_id = "test" }
        action = "ignore"

        [[rule]]
        name = "everything-else"
        source = "coniq"
        event = "reward.issued"
        provider = "ifeelgoods"
        promotion_id = 1
        sku = "SKU"
        """,
    )
    rules = load_rules(path)
    # when
    ignored = rules.route("coniq", "reward.issued", {"offer_id": "test"})
    routed = rules.route("coniq", "reward.issued", {"offer_id": "1001"})
    # then
    assert ignored is None
    assert routed is not None and routed.rule == "everything-else"


@pytest.mark.parametrize(
    ("source", "event_type", "wanted"),
    [
        ("coniq", "reward.issued", True),
        ("internal", "reward.granted", True),
        ("coniq", "customer.created", False),  # only an ignore rule names it
        ("coniq", "points.updated", False),  # no rule names it
        ("internal", "reward.issued", False),  # rules for that type are coniq-only
    ],
)
def test_wants_is_true_only_when_a_fulfil_rule_could_apply(
    example_rules, source, event_type, wanted
):
    # given the example rules
    # when / then
    assert example_rules.wants(source, event_type) is wanted


def test_wants_is_true_for_a_wildcard_event_rule(tmp_path):
    # given a rule for every coniq event type
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "all-coniq"
        source = "coniq"
        event = "*"
        provider = "ifeelgoods"
        promotion_id = 1
        sku = "SKU"
        """,
    )
    rules = load_rules(path)
    # when / then
    assert rules.wants("coniq", "points.updated") is True
    assert rules.wants("internal", "points.updated") is False


def test_empty_file_loads_as_no_rules(tmp_path):
    # given an empty rules file
    path = write_rules(tmp_path, "")
    # when
    rules = load_rules(path)
    # then nothing is routable, and nothing is wanted
    assert rules.rules == ()
    assert rules.route("coniq", "reward.issued", {"offer_id": "1001"}) is None
    assert rules.wants("coniq", "reward.issued") is False


_IFG = """
[[rule]]
name = "ok"
event = "reward.issued"
provider = "ifeelgoods"
promotion_id = 1
sku = "SKU"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _IFG + '[[rule]]\nevent = "reward.issued"\nprovider = "ifeelgoods"\n',
            ["rule #2", "'name'"],
            id="missing-name",
        ),
        pytest.param(
            _IFG + '[[rule]]\nname = " "\nevent = "x"\n',
            ["rule #2", "'name'"],
            id="blank-name",
        ),
        pytest.param(_IFG + _IFG, ["rule 'ok' (#2)", "'name'", "unique"], id="duplicate-name"),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "reward.issued"\nprovider = "tango"\n',
            ["rule 'r1'", "'provider'"],
            id="unknown-provider",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "reward.issued"\n',
            ["rule 'r1'", "'provider'"],
            id="missing-provider",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "ifeelgoods"\npromotion_id = 1\n',
            ["rule 'r1'", "'sku'"],
            id="missing-sku",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "ifeelgoods"\n'
            'promotion_id = "1"\nsku = "SKU"\n',
            ["rule 'r1'", "'promotion_id'"],
            id="promotion-id-string",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "ifeelgoods"\n'
            'promotion_id = -4\nsku = "SKU"\n',
            ["rule 'r1'", "'promotion_id'"],
            id="promotion-id-negative",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "rewardops"\n'
            'program_id = 12\nitem_order_token = ""\n',
            ["rule 'r1'", "'item_order_token'"],
            id="empty-item-order-token",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "rewardops"\n'
            'program_id = 1.5\nitem_order_token = "tok"\n',
            ["rule 'r1'", "'program_id'"],
            id="program-id-float",
        ),
        pytest.param(
            _IFG.replace('"ok"', '"r1"') + 'colour = "blue"\n',
            ["rule 'r1'", "'colour'"],
            id="extra-field",
        ),
        pytest.param(
            _IFG.replace('"ok"', '"r1"') + "program_id = 12\n",
            ["rule 'r1'", "'program_id'"],
            id="other-providers-field",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\naction = "ignore"\nsku = "SKU"\n',
            ["rule 'r1'", "'sku'"],
            id="field-on-ignore-rule",
        ),
        pytest.param(
            '[[rule]]\nname = "r1"\nevent = "e"\naction = "drop"\n',
            ["rule 'r1'", "'action'"],
            id="unknown-action",
        ),
        pytest.param(
            _IFG.replace('"ok"', '"r1"').replace('event = "reward.issued"\n', ""),
            ["rule 'r1'", "'event'"],
            id="missing-event",
        ),
        pytest.param(
            _IFG.replace('"ok"', '"r1"') + 'source = "email"\n',
            ["rule 'r1'", "'source'"],
            id="unknown-source",
        ),
        pytest.param(
            _IFG.replace('"ok"', '"r1"') + "match = { offer_id = [1, 2] }\n",
            ["rule 'r1'", "'match'"],
            id="match-list-value",
        ),
    ],
)
def test_invalid_rule_raises_error_naming_rule_and_field(tmp_path, text, expected):
    # given a rules file with one mistake
    path = write_rules(tmp_path, text)
    # when
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    # then the message names the rule and the field, on one line
    message = str(caught.value)
    for part in expected:
        assert part in message
    assert "\n" not in message


def test_bad_toml_raises_error_naming_the_file(tmp_path):
    # given a file that is not TOML
    path = write_rules(tmp_path, '[[rule]]\nname = "unterminated\n')
    # when
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    # then
    assert str(path) in str(caught.value)
    assert "TOML" in str(caught.value)


def test_missing_file_raises_rules_error(tmp_path):
    # given a path with no file
    path = tmp_path / "absent.toml"
    # when / then
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(path)


@pytest.mark.parametrize(
    "text",
    ['rule = "not a table"\n', _IFG + "[extras]\nx = 1\n"],
    ids=["rule-not-array", "unknown-top-level-table"],
)
def test_malformed_document_shape_raises_rules_error(tmp_path, text):
    # given a document whose top level is not an array of rules
    path = write_rules(tmp_path, text)
    # when / then
    with pytest.raises(RulesError):
        load_rules(path)


@pytest.mark.parametrize(
    "text",
    [
        '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "ifeelgoods"\n'
        'promotion_id = true\nsku = "SKU"\n',
        '[[rule]]\nname = "r1"\nevent = "e"\nprovider = "rewardops"\n'
        'program_id = true\nitem_order_token = "tok"\n',
    ],
    ids=["promotion_id", "program_id"],
)
def test_boolean_product_id_is_rejected(tmp_path, text):
    # given a rule whose numeric id is a boolean
    path = write_rules(tmp_path, text)
    # when / then
    with pytest.raises(RulesError, match="rule 'r1'.*_id"):
        load_rules(path)


def test_boolean_match_value_matches_unit_recorded_at_the_edge(tmp_path):
    # given a rule matching a boolean data field
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "vip-points"
        source = "coniq"
        event = "points.updated"
        match = { vip = true }
        provider = "ifeelgoods"
        promotion_id = 1
        sku = "SKU"
        """,
    )
    rules = load_rules(path)
    # when a unit whose data had vip=true (the edge records JSON true as "true") is routed
    route = rules.route("coniq", "points.updated", {"vip": "true"})
    # then
    assert route is not None


def test_coniq_unit_cannot_choose_its_own_product(tmp_path):
    # given a rule for gold-tier coniq points events
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "gold-points"
        source = "coniq"
        event = "points.updated"
        match = { tier = "gold" }
        provider = "ifeelgoods"
        promotion_id = 1
        sku = "SMALL"
        """,
    )
    rules = load_rules(path)
    # when a silver-tier coniq event carries provider + product in its data
    fields = {"tier": "silver", "provider": "ifeelgoods", "product": "999/EXPENSIVE"}
    route = rules.route("coniq", "points.updated", fields)
    # then no rule matched, so it is unroutable
    assert route is None


@pytest.mark.parametrize(
    ("source", "event_type", "fields", "expected"),
    [
        ("coniq", "customer.created", {}, "coniq-customer-events"),  # the ignore rule
        ("coniq", "reward.issued", {"offer_id": "1001"}, "coniq-gift-card"),
        ("coniq", "reward.issued", {"offer_id": "9999"}, None),  # unroutable
        ("internal", "reward.granted", {"provider": "rewardops", "product": "1/t"}, "event"),
    ],
)
def test_decide_tells_ignored_from_unroutable(example_rules, source, event_type, fields, expected):
    # given the example rules
    # when
    decision = example_rules.decide(source, event_type, fields)
    # then an ignore rule is returned itself, a fulfil rule as its route, no match as None
    if expected is None:
        assert decision is None
    elif expected == "coniq-customer-events":
        assert isinstance(decision, Rule)
        assert (decision.name, decision.route) == (expected, None)
    else:
        assert isinstance(decision, Route)
        assert decision.rule == expected


def test_internal_unit_naming_provider_and_product_bypasses_rules(example_rules):
    # given the example rules (none for this product)
    fields = {"provider": "rewardops", "product": "77/tok-x"}
    # when
    route = example_rules.route("internal", "reward.granted", fields)
    # then the event's own choice is used
    assert route == Route("rewardops", "event", program_id=77, item_order_token="tok-x")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"provider": "ifeelgoods", "product": "1/APP-ITU-10USD-US"},
            Route("ifeelgoods", "event", promotion_id=1, sku="APP-ITU-10USD-US"),
        ),
        (
            {"provider": "rewardops", "product": "12/tok-gift-25"},
            Route("rewardops", "event", program_id=12, item_order_token="tok-gift-25"),
        ),
        (
            {"provider": "rewardops", "product": "12/tok/with/slashes"},
            Route("rewardops", "event", program_id=12, item_order_token="tok/with/slashes"),
        ),
        ({"provider": "tango", "product": "1/SKU"}, None),
        ({"provider": "ifeelgoods"}, None),
        ({"product": "1/SKU"}, None),
        ({"provider": "ifeelgoods", "product": "SKU"}, None),
        ({"provider": "ifeelgoods", "product": "one/SKU"}, None),
        ({"provider": "ifeelgoods", "product": "1/"}, None),
        ({"provider": "ifeelgoods", "product": "-1/SKU"}, None),
        ({}, None),
    ],
)
def test_route_from_product_parses_only_well_formed_products(fields, expected):
    # given / when
    route = route_from_product(fields)
    # then
    assert route == expected


def test_route_product_label_names_the_ordered_item():
    # given routes to each provider
    ifg = Route("ifeelgoods", "r", promotion_id=1, sku="SKU")
    ro = Route("rewardops", "r", program_id=12, item_order_token="tok")
    # when / then
    assert (ifg.product, ro.product) == ("1/SKU", "12/tok")
    assert ifg.to_dict()["sku"] == "SKU"


REWARDOPS_RULE = """
    [[rule]]
    name = "voucher"
    event = "reward.granted"
    provider = "rewardops"
    program_id = 12
    item_order_token = "tok-gift-25"
"""


@pytest.mark.parametrize(
    ("member_spend", "currency", "amount"),
    [
        ("", "USD", "0"),  # no table: 0 in USD
        ('member_spend = { currency_code = "CAD" }', "CAD", "0"),
        ('member_spend = { currency_code = "XRO-PTS", amount = 1000 }', "XRO-PTS", "1000"),
        ('member_spend = { currency_code = "EUR", amount = "12.50" }', "EUR", "12.50"),
    ],
)
def test_rewardops_rule_member_spend_defaults_to_zero_and_takes_the_programme_currency(
    tmp_path, member_spend, currency, amount
):
    # given a RewardOps rule with or without member_spend (providers.md 2.6 requires it)
    path = write_rules(tmp_path, REWARDOPS_RULE + f"    {member_spend}\n")
    # when
    route = load_rules(path).route("internal", "reward.granted", {})
    # then
    assert route is not None
    assert (route.spend_currency, route.spend_amount) == (currency, amount)


@pytest.mark.parametrize(
    "member_spend",
    [
        'member_spend = "0"',
        'member_spend = { amount = "0" }',
        'member_spend = { currency_code = "dollars" }',
        'member_spend = { currency_code = "USD", amount = "-1" }',
        'member_spend = { currency_code = "USD", amount = 1.5 }',
        'member_spend = { currency_code = "USD", amount = "ten" }',
        'member_spend = { currency_code = "USD", amout = "0" }',
    ],
)
def test_invalid_member_spend_is_refused_naming_rule_and_field(tmp_path, member_spend):
    # given
    path = write_rules(tmp_path, REWARDOPS_RULE + f"    {member_spend}\n")
    # when
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    # then
    message = str(caught.value)
    assert "rule 'voucher'" in message and "'member_spend'" in message
    assert "\n" not in message


def test_member_spend_is_not_an_ifeelgoods_rule_field(tmp_path):
    # given
    path = write_rules(
        tmp_path,
        """
        [[rule]]
        name = "gift"
        event = "reward.granted"
        provider = "ifeelgoods"
        promotion_id = 1
        sku = "APP-ITU-10USD-US"
        member_spend = { currency_code = "USD" }
        """,
    )
    # when / then
    with pytest.raises(RulesError, match="'member_spend' is not a ifeelgoods rule field"):
        load_rules(path)
