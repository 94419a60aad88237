"""SGLang's own Python frontend (`sglang.lang`) against a running `dllm serve`.

Runs the four kinds of program its users write: a plain `gen`, a streamed one, `run_batch`, and
a two-turn `sgl.function`. Each must return its answer (an incompatible server makes `s["ans"]`
raise KeyError, or the call raise). Exits non-zero on the first failure.

    python3 -m venv .venv-sglang && .venv-sglang/bin/pip install --no-deps sglang \
        && .venv-sglang/bin/pip install numpy orjson psutil pybase64 requests torch packaging pillow \
           starlette msgspec pydantic pyzmq tqdm IPython aiohttp
    dllm serve --port 30000 &
    .venv-sglang/bin/python tools/sglang_frontend.py http://127.0.0.1:30000
"""

import sys

import sglang as sgl


@sgl.function
def one_answer(s, question):
    s += "<role>HUMAN</role>" + question + "<|role_end|><role>ASSISTANT</role>"
    s += sgl.gen("ans", max_tokens=32, temperature=0)


@sgl.function
def two_turns(s, first, second):
    s += "<role>HUMAN</role>" + first + "<|role_end|><role>ASSISTANT</role>"
    s += sgl.gen("a1", max_tokens=16, temperature=0)
    s += "<|role_end|><role>HUMAN</role>" + second + "<|role_end|><role>ASSISTANT</role>"
    s += sgl.gen("a2", max_tokens=16, temperature=0)


def main(url):
    sgl.set_default_backend(sgl.RuntimeEndpoint(url))
    ok = True

    def report(name, value):
        nonlocal ok
        good = isinstance(value, str)
        ok &= good
        print(f"{name}: {'ok' if good else 'FAILED'}: {value!r}")

    s = one_answer.run(question="Why did Camus say that Sisyphus was happy?")
    report("plain", s["ans"])

    s = one_answer.run(question="Name a prime number.", stream=True)
    chunks = list(s.text_iter("ans"))
    report(f"streamed ({len(chunks)} chunks)", "".join(chunks))
    report("streamed, final", s["ans"])

    states = one_answer.run_batch([{"question": q} for q in ["One?", "Two?", "Three?"]])
    for i, st in enumerate(states):
        report(f"run_batch[{i}]", st["ans"])

    s = two_turns.run(first="Hello.", second="And then?")
    report("two turns, first", s["a1"])
    report("two turns, second", s["a2"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:30000"))
