"""ctypes binding to the eSpeak NG library shipped in the ``espeakng-loader`` wheel.

Only what streaming synthesis needs (``speak_lib.h``): synchronous mode with a synthesis
callback that receives ~``buffer_ms`` of int16 audio at a time plus the events (word positions)
that fall in it. eSpeak NG keeps global state, so there is one ``EspeakNG`` per process and
one synthesis at a time (the Triton model runs one instance per stub process).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import espeakng_loader
import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EE_OK = 0


class EspeakError(RuntimeError):
    pass


class _Event(ctypes.Structure):
    # espeak_EVENT: type, unique_identifier, text_position (1-based, in characters),
    # length, audio_position (ms since the start of this synthesis), sample, user_data, id.
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True, slots=True)
class WordMark:
    text_index: int  # 0-based character index into the text given to eSpeak
    length: int
    audio_ms: int


# (samples, word marks in this buffer) -> keep going?
ChunkHandler = Callable[[np.ndarray, list[WordMark]], bool]


class EspeakNG:
    def __init__(self, buffer_ms: int) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data_path = espeakng_loader.get_data_path().encode()
        # buflength: milliseconds of audio per callback; small, so audio leaves as it is made.
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, buffer_ms, data_path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = rate
        self._lib = lib
        self._handler: ChunkHandler | None = None
        self._failure: BaseException | None = None
        self._callback = _Callback(self._on_audio)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def set_voice(self, name: str) -> None:
        if self._lib.espeak_SetVoiceByName(name.encode()) != EE_OK:
            raise EspeakError(f"eSpeak has no voice {name!r}")

    def synthesize(self, text: str, flags: int, handler: ChunkHandler) -> None:
        """Speak ``text``; ``handler`` gets each buffer as it is produced, in order.

        Raises:
            EspeakError: eSpeak refused the text.
            Exception: whatever ``handler`` raised (synthesis is stopped first).
        """
        encoded = text.encode("utf-8") + b"\0"
        self._handler, self._failure = handler, None
        try:
            status = self._lib.espeak_Synth(
                encoded, len(encoded), 0, POS_CHARACTER, 0, flags | ESPEAK_CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
        finally:
            self._handler = None
        if self._failure is not None:
            raise self._failure
        if status != EE_OK:
            raise EspeakError(f"espeak_Synth failed ({status})")

    def _on_audio(self, wav: ctypes._Pointer, count: int, events: ctypes._Pointer) -> int:
        # Called by eSpeak inside espeak_Synth on this thread. Return 1 to abort synthesis.
        if self._handler is None or self._failure is not None:
            return 1
        try:
            marks = []
            index = 0
            while events[index].type != EVENT_LIST_TERMINATED:
                event = events[index]
                if event.type == EVENT_WORD:
                    marks.append(
                        WordMark(event.text_position - 1, event.length, event.audio_position)
                    )
                index += 1
            samples = (
                np.ctypeslib.as_array(wav, shape=(count,)).copy()
                if count > 0 and wav
                else np.zeros(0, np.int16)
            )
            return 0 if self._handler(samples.astype(np.int16, copy=False), marks) else 1
        except BaseException as exc:  # never let an exception unwind through C
            self._failure = exc
            return 1
