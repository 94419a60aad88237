"""SGLang's own Python frontend (`sglang.lang`) against a running `dllm serve`.

Runs the four kinds of program its users write: a plain `gen`, a streamed one, `run_batch`, and
a two-turn `sgl.function`; then `gen` with the sampling and output options the frontend passes
through: `stop_regex`, `return_logprob=True` (`output_token_logprobs` in the meta info, one
logprob <= 0 per token) and the penalties / `min_p`. Each must return its answer (an
incompatible server makes `s["ans"]` raise KeyError, or the call raise). Exits non-zero if any
check failed. (`n` > 1 is not among them: the frontend reads one `text` per `gen`; its
`fork` is how it samples several answers.)

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


@sgl.function
def with_options(s, question, **gen_args):
    s += "<role>HUMAN</role>" + question + "<|role_end|><role>ASSISTANT</role>"
    s += sgl.gen("ans", max_tokens=32, **gen_args)


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

    s = with_options.run(question="Why did Camus say that Sisyphus was happy?", temperature=0, stop_regex=r"\.{3}")
    report("stop_regex", s["ans"])
    reason = s.get_meta_info("ans")["finish_reason"]
    print(f"stop_regex finish_reason: {reason}")

    s = with_options.run(question="Why?", temperature=0, return_logprob=True, return_text_in_logprobs=True)
    report("return_logprob", s["ans"])
    meta = s.get_meta_info("ans")
    lps = meta.get("output_token_logprobs") or []
    good = len(lps) == meta["completion_tokens"] and all(lp[0] <= 0 for lp in lps)
    ok &= good
    print(f"return_logprob: {'ok' if good else 'FAILED'}: {len(lps)} logprobs, first {lps[:2]}")

    s = with_options.run(question="Again?", temperature=0.8, top_k=50, min_p=0.05, frequency_penalty=0.5, presence_penalty=0.5)
    report("penalties and min_p", s["ans"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:30000"))
