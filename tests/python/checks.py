"""The check runner both tritonclient scripts share: each check is a
function of a context object; a check whose prerequisite (an attribute an
earlier check sets) is missing fails without running; every failure is one
line, a client-side crash with its trace."""

import sys
import time
import traceback

from tritonclient.utils import InferenceServerException


class CheckFailed(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def run_checks(c, checks, needs, title):
    """Runs `checks` on `c`, prints a line per check and a summary; returns
    the exit status (1 when one failed)."""
    passed, failed = 0, []
    for t in checks:
        need = needs.get(t)
        if need and not hasattr(c, need):
            failed.append(t.__name__)
            print(f"FAIL {t.__name__}: not run, an earlier check it builds on failed", flush=True)
            continue
        t0 = time.time()
        try:
            t(c)
            passed += 1
            print(f"ok   {t.__name__} ({time.time() - t0:.1f} s)", flush=True)
        except CheckFailed as e:
            failed.append(t.__name__)
            print(f"FAIL {t.__name__}: {e}", flush=True)
        except InferenceServerException as e:
            failed.append(t.__name__)
            print(f"FAIL {t.__name__}: server error (HTTP {e.status()}): {e.message()}", flush=True)
        except Exception as e:  # a client-side crash is a failure too, with its trace
            failed.append(t.__name__)
            print(f"FAIL {t.__name__}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
    c.client.close()
    print(f"{title}: {passed} passed, {len(failed)} failed")
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    return 0
