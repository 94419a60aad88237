//! The chat template comes from the checkpoint (chat_template.jinja, else tokenizer_config.json),
//! rendered as Hugging Face does; the built-in LLaDA2 one only when the checkpoint has none.

mod http_client;

use dllm::server::{self, ServeArgs};
use dllm::tokenizer::{ChatMessage, ChatTemplate, TemplateSource, LLADA2_CHAT_TEMPLATE};
use http_client::*;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

fn msgs(v: Value) -> Vec<ChatMessage> {
    serde_json::from_value(v).unwrap()
}

/// A copy of the tiny checkpoint (weights linked, not copied) whose tokenizer files we may edit.
fn checkpoint_copy(name: &str) -> PathBuf {
    let src = model_dir();
    let dst = std::env::temp_dir().join(format!("dllm-template-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.extension().is_some_and(|x| x == "safetensors") {
            std::os::unix::fs::symlink(&p, &to).unwrap();
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
    dst
}

fn set_config_template(dir: &Path, template: Value) {
    let path = dir.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    match template {
        Value::Null => cfg.as_object_mut().unwrap().remove("chat_template"),
        t => cfg.as_object_mut().unwrap().insert("chat_template".into(), t),
    };
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
}

#[test]
fn the_built_in_template_is_llada2s_format() {
    let t = ChatTemplate::compile(LLADA2_CHAT_TEMPLATE.into(), TemplateSource::BuiltIn, Map::new()).unwrap();
    let m = msgs(json!([
        {"role": "system", "content": "detailed thinking off"},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Because."},
        {"role": "Human", "content": "Sure?"}
    ]));
    assert_eq!(
        t.render(&m, &Map::new()).unwrap(),
        "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Why?<|role_end|>\
         <role>ASSISTANT</role>Because.<|role_end|><role>HUMAN</role>Sure?<|role_end|><role>ASSISTANT</role>"
    );
}

#[test]
fn the_checkpoints_template_wins_and_is_rendered_like_hugging_face() {
    let dir = checkpoint_copy("config");
    // Python string methods, trim_blocks/lstrip_blocks, special tokens and kwargs as variables.
    let template = "{% for m in messages %}\n  {% if m %}[{{ m.role.upper() }}] {{ m['content'].strip() }}{{ eos_token }}{% endif %}\n\
                    {% endfor %}{% if add_generation_prompt %}[A{{ suffix }}]{% endif %}";
    set_config_template(&dir, json!(template));
    let t = ChatTemplate::from_checkpoint(&dir).unwrap();
    assert_eq!(t.source, TemplateSource::TokenizerConfig);
    let kw: Map<String, Value> = json!({"suffix": "!"}).as_object().unwrap().clone();
    let got = t.render(&msgs(json!([{"role": "user", "content": "  hi  "}])), &kw).unwrap();
    assert_eq!(got, "[USER] hi<|endoftext|>[A!]");

    // A list of named templates: "default" is the chat one.
    set_config_template(&dir, json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages | length }}"}]));
    assert_eq!(
        ChatTemplate::from_checkpoint(&dir).unwrap().render(&msgs(json!([{"role": "user", "content": "x"}])), &Map::new()).unwrap(),
        "D1"
    );

    // chat_template.jinja beside the weights takes precedence (as in transformers).
    std::fs::write(dir.join("chat_template.jinja"), "J{{ messages[0].content }}").unwrap();
    let t = ChatTemplate::from_checkpoint(&dir).unwrap();
    assert_eq!(t.source, TemplateSource::JinjaFile);
    assert_eq!(t.render(&msgs(json!([{"role": "user", "content": "x"}])), &Map::new()).unwrap(), "Jx");

    // None at all: the built-in one.
    std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
    set_config_template(&dir, Value::Null);
    assert_eq!(ChatTemplate::from_checkpoint(&dir).unwrap().source, TemplateSource::BuiltIn);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_template_that_does_not_compile_is_a_load_error_naming_the_file() {
    let dir = checkpoint_copy("broken");
    set_config_template(&dir, json!("{% for m in messages %}{{ m.content }"));
    let e = format!("{:#}", ChatTemplate::from_checkpoint(&dir).err().expect("a broken template must not load"));
    assert!(e.contains("tokenizer_config.json") && e.contains("does not compile"), "{e}");
    set_config_template(&dir, json!([{"name": "tool_use", "template": "T"}]));
    let e = format!("{:#}", ChatTemplate::from_checkpoint(&dir).err().unwrap());
    assert!(e.contains("\"default\""), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_render_the_checkpoints_template() {
    let dir = checkpoint_copy("http");
    let template = "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}\
                    {{ raise_exception('Conversation must start with a user message') }}{% endif %}\
                    <role>{{ m.role | upper }}</role>{{ m.content }}<|role_end|>{% endfor %}\
                    {% if thinking %}<think>{% endif %}<role>ASSISTANT</role>";
    set_config_template(&dir, json!(template));
    let args = ["serve", "--model-path", dir.to_str().unwrap(), "--port", "0", "--device", "cpu", "--log-level", "error"];
    let srv = server::start(ServeArgs::parse_from(args).unwrap()).await.expect("server starts");
    let a = srv.addr;

    // The prompt is the checkpoint's rendering ("USER", not the built-in "HUMAN"), so the chat
    // answer equals /generate on that text.
    let m = json!([{"role": "user", "content": "Why?"}]);
    for (kwargs, text) in [
        (Value::Null, "<role>USER</role>Why?<|role_end|><role>ASSISTANT</role>"),
        (json!({"thinking": true}), "<role>USER</role>Why?<|role_end|><think><role>ASSISTANT</role>"),
    ] {
        let native = post(a, "/generate", &json!({"text": text, "sampling_params": {"temperature": 0, "max_new_tokens": 8}})).await.json();
        let body = json!({"messages": m, "max_tokens": 8, "temperature": 0, "chat_template_kwargs": kwargs});
        let c = post(a, "/v1/chat/completions", &body).await.json();
        assert_eq!(c["usage"]["prompt_tokens"], native["meta_info"]["prompt_tokens"], "{kwargs}");
        assert_eq!(c["choices"][0]["message"]["content"], native["text"], "{kwargs}");
    }

    // The template's own refusal is the client's error, with its message.
    let r = post(a, "/v1/chat/completions", &json!({"messages": [{"role": "assistant", "content": "hi"}], "max_tokens": 4})).await;
    assert_error(&r, 400, "Conversation must start with a user message");
    let r = post(a, "/v1/chat/completions", &json!({"messages": m, "chat_template_kwargs": 3})).await;
    assert_error(&r, 400, "chat_template_kwargs must be an object");
    // and the server keeps serving.
    assert_eq!(get(a, "/health").await.status, 200);
    srv.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
