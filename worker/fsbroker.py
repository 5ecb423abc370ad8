"""The embedded broker: kombu's filesystem transport, with message files written atomically.

kombu's filesystem channel creates a message file and then writes into it, while a
consumer moves and reads any file it lists, unlocked: a consumer that lists the folder
in between reads an empty message and the worker dies on a JSON error (seen under
load). Here a message is written under a name consumers skip and then renamed into
place, which is atomic within one filesystem.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear only once complete."""

    # kombu's filesystem Channel already narrows AbstractChannel._put the same way.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Consumers take only "<stamp>_<uuid>.<queue>.msg": a leading dot hides this one.
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"cannot add message file {final!r}: {exc}") from exc


class Transport(filesystem.Transport):
    """`filesystem://` with `Channel` above."""

    Channel = Channel
