"""A tiny modular input built on the real splunklib, shaped like UCC's generated inputs.

Behaviour per stanza parameter ``mode``: once, forever, corrupt, leak, crash, badtime,
orphan.
"""

import base64
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunklib import modularinput as smi

STOP = threading.Event()


def _on_sigterm(signum, frame):
    STOP.set()  # finish the current unit of work, then return from stream_events


class DemoInput(smi.Script):
    def get_scheme(self):
        scheme = smi.Scheme("demo_input")
        scheme.description = "Harness self-test input"
        scheme.use_external_validation = True
        scheme.use_single_instance = False
        scheme.add_argument(
            smi.Argument("mode", title="Mode", description="what to do", required_on_create=True)
        )
        scheme.add_argument(
            smi.Argument("count", data_type=smi.Argument.data_type_number, required_on_edit=True)
        )
        return scheme

    def validate_input(self, definition):
        count = definition.parameters.get("count")
        if count is not None and (not count.isdigit() or int(count) < 1):
            raise ValueError(
                f"count: must be a positive whole number of events, got {count!r} "
                f"(input {definition.metadata['name']})"
            )

    def stream_events(self, inputs, ew):
        signal.signal(signal.SIGTERM, _on_sigterm)
        for stanza, params in inputs.inputs.items():
            mode = params.get("mode", "once")
            count = int(params.get("count") or 3)
            if mode == "corrupt":
                print("debug: starting")  # the bug class: stdout is the event stream
            if mode == "leak":
                log = os.path.join(
                    os.environ["SPLUNK_HOME"], "var", "log", "splunk", "ta_mailsec_demo.log"
                )
                key = inputs.metadata["session_key"]
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(f"connecting with key={key}\n")
                    fh.write(f"auth={base64.b64encode(('admin:' + key).encode()).decode()}\n")
            if mode == "orphan":  # a child left behind (holding stdout open)
                subprocess.Popen(["sleep", "30"])
            if mode == "forever":
                self._forever(stanza, params, ew)
                continue
            for seq in range(count):
                data = {
                    "seq": seq,
                    "subject": 'Grüße <b>&</b> "q" ]]> \u2603',
                    "cwd": os.getcwd(),
                    "splunk_home": os.environ.get("SPLUNK_HOME"),
                    "dont_write_bytecode": sys.dont_write_bytecode,
                    "venv_on_path": any("site-packages" in p for p in sys.path),
                    "metadata_keys": sorted(inputs.metadata),
                    "checkpoint_dir": inputs.metadata["checkpoint_dir"],
                    "params": {k: v for k, v in params.items() if k != "__app"},
                    "app": params.get("__app"),
                    "probe": os.environ.get("HARNESS_PROBE"),
                    "ca_bundle_set": "REQUESTS_CA_BUNDLE" in os.environ,
                    "pythonpath": os.environ.get("PYTHONPATH"),
                    "pytest_env": sorted(k for k in os.environ if k.startswith("PYTEST_")),
                    "python": "{}.{}".format(*sys.version_info[:2]),
                    "script_python_env": "MAILSEC_SCRIPT_PYTHON" in os.environ,
                }
                when = 1700000000 + seq + 0.25
                if mode == "badtime":
                    when = datetime.datetime.fromtimestamp(when)
                ew.write_event(
                    smi.Event(
                        data=json.dumps(data, ensure_ascii=False),
                        time=when if mode == "badtime" else f"{when:.3f}",
                        sourcetype="mailsec:demo",
                        index=params.get("index"),
                        source=stanza,
                        stanza=stanza,
                    )
                )
                if mode == "crash":
                    raise RuntimeError("simulated failure after the first event")

    def _forever(self, stanza, params, ew):
        seq = 0
        while True:
            time.sleep(0.15)  # one unit of work; SIGTERM during it does not cut it short
            stopping = STOP.is_set()
            ew.write_event(
                smi.Event(
                    data=json.dumps({"seq": seq, "stop_requested": stopping}),
                    time=f"{time.time():.3f}",
                    sourcetype="mailsec:demo",
                    stanza=stanza,
                )
            )
            seq += 1
            if stopping:
                ew.log(smi.EventWriter.INFO, f"stopping after SIGTERM, {seq} events written")
                return


if __name__ == "__main__":
    sys.exit(DemoInput().run(sys.argv))
