import ctypes
import signal
import threading


class Model:
    """Dies of a fatal signal inside predict, the way a broken native extension would."""

    def predict(self, model_input):
        crash_in_native_code(model_input.get("signal", "SIGILL"))


def crash_in_native_code(name):
    if name == "SIGSEGV":
        ctypes.string_at(0)  # a real invalid read in native code
    # An illegal instruction is delivered to the thread that ran it, as this is.
    signal.pthread_kill(threading.get_ident(), getattr(signal, name))
