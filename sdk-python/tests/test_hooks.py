"""The SDK's hook wrapper on CPython, against componentize-py's stub bindings
with the host calls replaced by fakes: how decisions, exit(), refused checks
and errors become what the world's exports return.

    python3 -m unittest discover -s sdk-python/tests

(tests/python_sdk.rs runs it too; the same SDK inside a component, through
the real wisp, is what that test's calls check.)
"""

import subprocess
import sys
import tempfile
import types
import unittest
from pathlib import Path

SDK = Path(__file__).resolve().parent.parent
WIT = SDK.parent / "wit"

_stubs = tempfile.TemporaryDirectory(prefix="wisp-py-stubs-")
subprocess.run(
    ["componentize-py", "-q", "-d", str(WIT), "-w", "router", "bindings", _stubs.name],
    check=True,
)
sys.path[:0] = [_stubs.name, str(SDK)]

from componentize_py_types import Err  # noqa: E402
from wit_world.imports import acc as raw_acc  # noqa: E402
from wit_world.imports import auth as raw_auth  # noqa: E402
from wit_world.imports import config as raw_config  # noqa: E402
from wit_world.imports import log as raw_log  # noqa: E402
from wit_world.imports import proxy as raw_proxy  # noqa: E402
from wit_world.imports import registrar as raw_registrar  # noqa: E402
from wit_world.imports import sip  # noqa: E402
from wit_world.imports import vars as raw_vars  # noqa: E402

import wisp  # noqa: E402
from wisp._hooks import world  # noqa: E402

LOGGED = []
raw_log.write = lambda level, message: LOGGED.append((level.name, message))


class FakeFields(sip.Fields):
    released = 0

    def __init__(self):
        self.headers = {"Route": "<sip:p>"}

    def get(self, name):
        return self.headers.get(name)

    def has(self, name):
        return name in self.headers

    def append(self, name, value):
        if "\r" in value:
            raise Err(sip.Error_Invalid("CR in value"))
        self.headers[name] = value

    def __exit__(self, *exc):
        FakeFields.released += 1


class FakeRequest(sip.Request):
    def __init__(self, method=sip.Method_Invite()):
        self._method = method

    def fields(self):
        return FakeFields()

    def method(self):
        return self._method

    def uri(self):
        return "sip:bob@example.com"

    def uri_parts(self):
        return sip.UriParts("bob", "example.com", None)


class FakeResponse(sip.Response):
    def __init__(self, status):
        self._status = status

    def status(self):
        return self._status


def info(method=sip.Method_Invite(), in_dialog=False):
    source = sip.Endpoint(sip.Transport.UDP, "127.0.0.1", 5070)
    return sip.RequestInfo(method, in_dialog, True, source, True)


def routing(**hooks):
    return world(types.SimpleNamespace(__name__="test_routing", **hooks))()


def refuse(code):
    def check(*_args):
        raise Err(sip.Error_Refused(sip.Reply(code, None, [])))

    return check


class RouteHook(unittest.TestCase):
    def setUp(self):
        LOGGED.clear()
        raw_proxy.max_forwards = lambda req, limit: None

    def run_route(self, route, method=sip.Method_Invite()):
        return routing(route=route).route(FakeRequest(method), info(method))

    def test_a_decision_in_a_helper_stops_its_caller(self):
        reached = []

        def helper(req):
            req.reply(404, headers={"X-Why": "nobody"})

        def route(req):
            helper(req)
            reached.append("after")
            req.reply(200)

        action = self.run_route(route)
        self.assertEqual(action, sip.Action_Reply(sip.Reply(404, None, [sip.Header("X-Why", "nobody")])))
        self.assertEqual(reached, [])

    def test_except_exception_does_not_catch_a_decision(self):
        def route(req):
            try:
                req.relay("sip:trunk.example.com;transport=tcp", final_timeout_ms=5000)
            except Exception:
                req.reply(500, "caught")

        self.assertEqual(
            self.run_route(route),
            sip.Action_Relay(sip.Relay("sip:trunk.example.com;transport=tcp", None, 5000)),
        )

    def test_forward_exit_and_return(self):
        def forward(req):
            req.forward()

        self.assertEqual(self.run_route(forward), sip.Action_Forward(None))
        self.assertEqual(self.run_route(lambda req: wisp.exit()), sip.Action_Drop())
        self.assertEqual(self.run_route(lambda req: None), sip.Action_Drop())

    def test_a_refused_check_is_answered_with_its_reply(self):
        raw_proxy.max_forwards = refuse(483)
        action = self.run_route(lambda req: req.max_forwards())
        self.assertEqual(action, sip.Action_Reply(sip.Reply(483, None, [])))
        self.assertEqual(LOGGED, [])

    def test_a_reply_handed_back_by_a_service(self):
        saved = sip.Reply(200, "OK", [sip.Header("Contact", "<sip:a@b>;expires=60")])
        seen = []

        def save(req, options):
            seen.append(options)
            return saved

        raw_registrar.save = save

        def route(req):
            req.reply(wisp.registrar.save(req, nat=True, max_expires=600))

        self.assertEqual(self.run_route(route, sip.Method_Register()), sip.Action_Reply(saved))
        self.assertEqual(
            seen, [raw_registrar.SaveOptions(raw_registrar.SaveFlags.NAT, None, None, 600, None)]
        )

    def test_other_errors_are_logged_and_answered_500(self):
        def bad_header(req):
            req.fields.append("X-Bad", "a\r\nb")

        server_error = sip.Action_Reply(sip.Reply(500, None, []))
        self.assertEqual(self.run_route(bad_header), server_error)
        self.assertEqual(LOGGED, [("ERROR", "route failed: invalid argument: CR in value")])
        LOGGED.clear()
        self.assertEqual(self.run_route(lambda req: 1 // 0), server_error)
        self.assertEqual(len(LOGGED), 1)
        self.assertTrue(LOGGED[0][1].startswith("route raised ZeroDivisionError: "), LOGGED)
        self.assertIn("test_hooks.py:", LOGGED[0][1])

    def test_a_caught_wisp_error_says_what_went_wrong(self):
        def route(req):
            try:
                req.fields.append("X-Bad", "a\rb")
            except wisp.WispError as err:
                req.reply(400, f"refused {err.kind}: {err.detail}")

        action = self.run_route(route)
        self.assertEqual(action.value.reason, "refused invalid: CR in value")

    def test_request_reads(self):
        seen = {}

        def route(req):
            seen["method"] = req.method
            seen["is"] = req.is_method("BYE", "NOTIFY2")
            seen["user"] = req.uri_user()
            seen["route"] = "Route" in req.fields
            seen["myself"] = req.info.uri_is_myself

        self.run_route(route, sip.Method_Other("NOTIFY2"))
        self.assertEqual(
            seen, {"method": "NOTIFY2", "is": True, "user": "bob", "route": True, "myself": True}
        )

    def test_fields_handles_are_released_when_the_hook_ends(self):
        before = FakeFields.released

        def route(req):
            req.fields.get("Route")
            req.fields.has("Route")
            req.reply(200)

        self.run_route(route)
        self.assertEqual(FakeFields.released, before + 1)


class OtherHooks(unittest.TestCase):
    def setUp(self):
        LOGGED.clear()

    def test_on_failure(self):
        def serial(req, best):
            if best.is_status(503):
                req.relay("sip:backup.example.com")
            if best.status() == 486:
                req.reply(480, "Away")
            if best.status() == 404:
                req.forward()
            if best.status() == 401:
                raw_proxy.sanity_check = refuse(400)
                req.sanity_check()

        hooks = routing(route=lambda req: None, on_failure=serial)
        failed = lambda status: hooks.on_failure(FakeRequest(), FakeResponse(status))  # noqa: E731
        self.assertEqual(failed(503), sip.FailureAction_Relay(sip.Relay("sip:backup.example.com", None, None)))
        self.assertEqual(failed(486), sip.FailureAction_Reply(sip.Reply(480, "Away", [])))
        self.assertEqual(failed(408), sip.FailureAction_Upstream())
        self.assertEqual(failed(401), sip.FailureAction_Reply(sip.Reply(400, None, [])))
        self.assertEqual(LOGGED, [])
        self.assertEqual(failed(404), sip.FailureAction_Upstream())
        self.assertEqual(LOGGED, [("ERROR", "on_failure cannot forward: the best response goes upstream")])

    def test_on_reply_and_defaults(self):
        hooks = routing(route=lambda req: None, on_reply=lambda req, res: res.status() != 183)
        self.assertEqual(hooks.on_reply(FakeRequest(), FakeResponse(183)), sip.ReplyVerdict.DROP)
        self.assertEqual(hooks.on_reply(FakeRequest(), FakeResponse(180)), sip.ReplyVerdict.KEEP)
        bare = routing(route=lambda req: None)
        self.assertEqual(bare.on_reply(FakeRequest(), FakeResponse(183)), sip.ReplyVerdict.KEEP)
        self.assertEqual(bare.on_failure(FakeRequest(), FakeResponse(503)), sip.FailureAction_Upstream())
        self.assertIsNone(bare.on_branch(FakeRequest(), 0))

    def test_on_branch_method_and_misplaced_decisions(self):
        seen = []

        def on_branch(req, index):
            seen.append((req.method, index))
            req.reply(200)

        routing(route=lambda req: None, on_branch=on_branch).on_branch(FakeRequest(sip.Method_Bye()), 2)
        self.assertEqual(seen, [("BYE", 2)])
        self.assertEqual(LOGGED, [("ERROR", "on_branch cannot reply: the branch goes as it is")])

    def test_a_module_without_route_is_refused_at_build(self):
        with self.assertRaises(TypeError):
            world(types.SimpleNamespace(__name__="empty"))


class Services(unittest.TestCase):
    def test_config_answers_are_kept(self):
        asked = []

        def param(name):
            asked.append(name)
            return "sip:trunk" if name == "TRUNK" else None

        raw_config.param = param
        self.assertEqual(wisp.config.param("TRUNK"), "sip:trunk")
        self.assertEqual(wisp.config.param("TRUNK"), "sip:trunk")
        self.assertEqual(wisp.config.param("NOPE", "default"), "default")
        self.assertEqual(wisp.config.param("NOPE"), None)
        self.assertEqual(asked, ["TRUNK", "NOPE"])

    def test_vars_flags(self):
        store = {}
        raw_vars.get = store.get
        raw_vars.set = store.__setitem__
        raw_vars.remove = lambda name: store.pop(name, None) is not None
        self.assertFalse(wisp.vars.has("retried"))
        wisp.vars.set("retried")
        self.assertTrue(wisp.vars.has("retried"))
        self.assertEqual(wisp.vars.get("retried"), "1")
        self.assertTrue(wisp.vars.remove("retried"))
        self.assertFalse(wisp.vars.remove("retried"))

    def test_arm_and_account_hand_their_flags_to_the_host(self):
        armed, accounted = [], []
        raw_proxy.arm = armed.append
        raw_acc.account = accounted.append

        def route(req):
            wisp.acc.account(wisp.Accounted.ANSWERED)
            wisp.acc.account(wisp.Accounted.ANSWERED | wisp.Accounted.FAILED)
            wisp.arm(wisp.Hooks(0))
            wisp.arm(wisp.Hooks.ON_REPLY | wisp.Hooks.ON_FAILURE)
            req.relay()

        action = routing(route=route).route(FakeRequest(), info())
        self.assertEqual(action, sip.Action_Relay(sip.Relay(None, None, None)))
        hooks, events = raw_proxy.Hooks, raw_acc.Accounted
        self.assertEqual(armed, [hooks(0), hooks.ON_REPLY | hooks.ON_FAILURE])
        self.assertEqual(accounted, [events.ANSWERED, events.ANSWERED | events.FAILED])
        self.assertIs(wisp.acc.Accounted, raw_acc.Accounted)


class AnsweredByTheHost(unittest.TestCase):
    """save_and_reply and authorize_or_challenge (WIT 0.2.2): the host
    answers the request, and the hook stops with drop as exit() does."""

    def setUp(self):
        LOGGED.clear()

    def test_save_and_reply_stops_the_hook_with_drop(self):
        seen, reached = [], []

        def save_and_reply(req, options):
            seen.append(options)
            return 200

        raw_registrar.save_and_reply = save_and_reply

        def route(req):
            try:
                wisp.registrar.save_and_reply(req, persistent=True, nat=True, min_expires=30)
            except Exception:
                reached.append("except")
            reached.append("after")
            req.reply(500)

        action = routing(route=route).route(FakeRequest(sip.Method_Register()), info(sip.Method_Register()))
        self.assertEqual(action, sip.Action_Drop())
        self.assertEqual(reached, [])
        flags = raw_registrar.SaveFlags
        self.assertEqual(
            seen, [raw_registrar.SaveOptions(flags.PERSISTENT | flags.NAT, None, 30, None, None)]
        )
        # In on_failure, exit() is upstream, which the host's answer stands for.
        on_failure = lambda req, best: wisp.registrar.save_and_reply(req, max_contacts=1)  # noqa: E731
        hooks = routing(route=lambda req: None, on_failure=on_failure)
        self.assertEqual(hooks.on_failure(FakeRequest(), FakeResponse(408)), sip.FailureAction_Upstream())
        self.assertEqual(seen[1], raw_registrar.SaveOptions(flags(0), None, None, None, 1))
        self.assertEqual(LOGGED, [])

    def test_authorize_or_challenge_returns_the_user_or_stops_with_drop(self):
        users = {"alice.example.com": "alice", "nobody.example.com": None}
        asked = []

        def authorize_or_challenge(req, realm):
            asked.append(realm)
            return users[realm]

        raw_auth.authorize_or_challenge = authorize_or_challenge

        def route_for(realm):
            def route(req):
                user = wisp.auth.authorize_or_challenge(req, realm)
                req.reply(299, user)

            return route

        hooks = routing(route=route_for("alice.example.com"))
        self.assertEqual(hooks.route(FakeRequest(), info()), sip.Action_Reply(sip.Reply(299, "alice", [])))
        hooks = routing(route=route_for("nobody.example.com"))
        self.assertEqual(hooks.route(FakeRequest(), info()), sip.Action_Drop())
        self.assertEqual(asked, ["alice.example.com", "nobody.example.com"])
        self.assertEqual(LOGGED, [])

    def test_their_errors_fail_as_other_service_errors_do(self):
        def unavailable(*_args):
            raise Err(sip.Error_Unavailable("store down"))

        def not_allowed(*_args):
            raise Err(sip.Error_NotAllowed("answered already"))

        raw_registrar.save_and_reply = unavailable
        raw_auth.authorize_or_challenge = not_allowed
        server_error = sip.Action_Reply(sip.Reply(500, None, []))

        hooks = routing(route=lambda req: wisp.registrar.save_and_reply(req))
        self.assertEqual(hooks.route(FakeRequest(), info()), server_error)
        self.assertEqual(LOGGED, [("ERROR", "route failed: unavailable: store down")])
        LOGGED.clear()
        hooks = routing(route=lambda req: wisp.auth.authorize_or_challenge(req, "example.com"))
        self.assertEqual(hooks.route(FakeRequest(), info()), server_error)
        self.assertEqual(LOGGED, [("ERROR", "route failed: not allowed: answered already")])
        LOGGED.clear()

        on_failure = lambda req, best: wisp.auth.authorize_or_challenge(req, "example.com")  # noqa: E731
        hooks = routing(route=lambda req: None, on_failure=on_failure)
        self.assertEqual(hooks.on_failure(FakeRequest(), FakeResponse(503)), sip.FailureAction_Upstream())
        self.assertEqual(LOGGED, [("ERROR", "on_failure failed: not allowed: answered already")])

        kinds = []

        def route(req):
            try:
                wisp.registrar.save_and_reply(req)
            except wisp.WispError as err:
                kinds.append(err.kind)
            try:
                wisp.auth.authorize_or_challenge(req, "example.com")
            except wisp.WispError as err:
                kinds.append(err.kind)
            req.reply(503)

        action = routing(route=route).route(FakeRequest(), info())
        self.assertEqual(action, sip.Action_Reply(sip.Reply(503, None, [])))
        self.assertEqual(kinds, ["unavailable", "not-allowed"])


if __name__ == "__main__":
    unittest.main()
