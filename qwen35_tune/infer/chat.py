"""`qwen35-tune chat`: an interactive conversation with a loaded model, replies streamed as they are generated.

The prompt is the checkpoint's own chat template over the whole conversation; thinking is switched with the
template's ``enable_thinking`` (``/think``, ``/no_think``; Qwen3.5 has no in-text switches). Each reply is kept as
``content`` plus ``reasoning_content``, so the template decides what earlier turns show (Qwen3.5's drops the
reasoning of turns before the last user message). Streaming is transformers' ``TextStreamer``, pointed at our
output instead of ``print``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qwen35_tune.errors import UserError

COMMANDS = {
    "/think": "thinking on: the reply reasons inside <think>...</think> first",
    "/no_think": "thinking off: the reply answers directly",
    "/reset": "forget the conversation so far",
    "/exit": "leave (also /quit or Ctrl-D)",
    "/help": "this list",
}
PROMPT = ">>> "


def _streamer_class():
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        """TextStreamer writing to ``write`` (not stdout), without the end-of-turn token's text."""

        def __init__(self, tokenizer, write: Callable[[str], None], hidden: tuple[str, ...]):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=False)
            self.write, self.hidden = write, hidden

        def on_finalized_text(self, text: str, stream_end: bool = False):
            for token in self.hidden:
                text = text.replace(token, "")
            text += "\n" if stream_end else ""
            if text:
                self.write(text)

    return Streamer


@dataclass
class ChatSession:
    """One conversation with ``model``: the history, the thinking switch and the decoding settings."""

    model: object
    tokenizer: object
    write: Callable[[str], None]
    thinking: bool | None = None  # None: the chat template's default
    max_new_tokens: int = 1024
    temperature: float | None = None  # None: the checkpoint's generation_config.json; 0: greedy
    system: str | None = None
    history: list[dict] = field(default_factory=list)

    def render(self, user_text: str) -> str:
        """The prompt for the next reply: system, history, ``user_text`` and the assistant's generation prompt."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        kwargs = {} if self.thinking is None else {"enable_thinking": self.thinking}
        try:
            return self.tokenizer.apply_chat_template(messages + [{"role": "user", "content": user_text}],
                                                      tokenize=False, add_generation_prompt=True, **kwargs)
        except Exception as exc:  # jinja's TemplateError (raise_exception in the template) and the like
            raise UserError(f"the chat template refused the conversation: {exc}") from None

    def reply(self, user_text: str):
        """Stream the model's reply to ``user_text`` and keep the turn; returns the ``Generation``."""
        from qwen35_tune.eval.generate import (
            decode_generation,
            decoding_kwargs,
            generating,
            opens_think,
            stop_token_ids,
        )

        prompt = self.render(user_text)
        eos, pad = stop_token_ids(self.tokenizer)
        device = next(self.model.parameters()).device
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
        if opens_think(prompt):
            self.write("<think>\n")  # the template opened it; shown so the reasoning reads as reasoning
        hidden = tuple(self.tokenizer.convert_ids_to_tokens(eos)) + (self.tokenizer.pad_token or "",)
        streamer = _streamer_class()(self.tokenizer, self.write, tuple(t for t in hidden if t))
        with generating(self.model):
            ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                                      streamer=streamer, use_cache=True, **decoding_kwargs(self.temperature))
        generation = decode_generation(self.tokenizer, ids[0, enc["input_ids"].shape[1]:].tolist(), eos, pad,
                                       self.max_new_tokens, opens_think(prompt))
        if generation.truncated:
            self.write(f"[stopped at --max-new-tokens {self.max_new_tokens}]\n")
        assistant = {"role": "assistant", "content": generation.answer}
        if generation.reasoning:
            assistant["reasoning_content"] = generation.reasoning
        self.history += [{"role": "user", "content": user_text}, assistant]
        return generation

    def command(self, line: str) -> bool:
        """Run a /command; False when the session should end."""
        name = line.split()[0].lower()
        if name in ("/exit", "/quit"):
            return False
        if name in ("/think", "/no_think"):
            self.thinking = name == "/think"
            self.write(f"[{COMMANDS[name]}]\n")
        elif name == "/reset":
            self.history.clear()
            self.write("[conversation cleared]\n")
        elif name == "/help":
            self.write("".join(f"  {cmd:<10} {what}\n" for cmd, what in COMMANDS.items()))
        else:
            self.write(f"[unknown command {name}; /help lists them]\n")
        return True


def run_repl(session: ChatSession, read: Callable[[str], str] = input) -> int:
    """Read lines until /exit or end of input: /commands act on the session, anything else gets a reply.
    Ctrl-C stops a reply in progress (the turn is dropped) or, at the prompt, clears the line."""
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    while True:
        try:
            line = read(PROMPT).strip()
        except EOFError:
            session.write("\n")
            return 0
        except KeyboardInterrupt:
            session.write("\n")
            continue
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line):
                return 0
            continue
        try:
            session.reply(line)
        except KeyboardInterrupt:
            session.write("\n[reply interrupted; not kept]\n")
        except UserError as exc:
            session.write(f"[{exc}]\n")
