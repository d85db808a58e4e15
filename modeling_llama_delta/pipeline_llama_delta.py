"""The `algorithmic-qa` pipeline: questions as text in, Δ's answers as text out, as `model.solve` gives them.

Shipped with the remote code (`save_pretrained` declares it in `config.custom_pipelines`), so that

    from transformers import pipeline
    solver = pipeline(model="path/or/repo", trust_remote_code=True)
    solver(['Sort the string "dlifdbabejld"', 'Sort the string "hello"'], batch_size=2)
    # [{"answer": "abbdddefijll"}, {"answer": "ehllo"}]

works in a process that has never installed this project.
"""

from transformers import Pipeline

TASK = "algorithmic-qa"


class AlgorithmicQAPipeline(Pipeline):
    """`LlamaDeltaForAlgorithmicQA` as a text pipeline: a question (or a list, batched with `batch_size`) ->
    `{"answer": text}`. Refuses (ValueError) what `model.solve` refuses: a question longer than the context, or
    mentioning a number Δ cannot represent (`model.check_question`), and what the run reports
    (`AlgorithmicQAOutput.refusals`: an input longer than Δ's memory, a token inside it that spells no value, a
    run that did not halt)."""

    _load_tokenizer = True
    _load_processor = _load_image_processor = _load_video_processor = _load_feature_extractor = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise TypeError(f"the {TASK} pipeline takes no parameters besides batch_size; got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, question: str) -> dict:
        if not isinstance(question, str):
            raise TypeError(f"the {TASK} pipeline takes a question as a string (or a list of them), not {question!r}")
        inputs = self.tokenizer(question, return_tensors="pt")  # (1, T)
        self.model.check_question(question, inputs["input_ids"].shape[1])
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}

    def _forward(self, inputs: dict) -> dict:
        # (B, T) padded by the pipeline's collator -> (B, K) answer elements
        out = self.model.answer_values(inputs["input_ids"], inputs["attention_mask"])
        for row, refusal in enumerate(out.refusals):
            if refusal is not None:
                question = self.tokenizer.decode(inputs["input_ids"][row], skip_special_tokens=True)
                raise ValueError(f"refused {question!r}: {refusal}")
        return {"answer_values": out.values, "program": out.program}

    def postprocess(self, outputs: dict) -> dict:
        values = outputs["answer_values"][0].tolist()  # (1, K) per question, batched or not
        return {"answer": self.model.answer_text(values, int(outputs["program"][0]))}


def custom_pipelines() -> dict:
    """What `config.custom_pipelines` holds (a fresh dict per config): the class as `module.Class` inside the repo,
    and the Auto class that loads the model (`AutoModel` follows `auto_map` to the remote code), as
    `Pipeline.save_pretrained` writes them."""
    impl = f"{__name__.rsplit('.', 1)[-1]}.{AlgorithmicQAPipeline.__name__}"
    return {TASK: {"impl": impl, "pt": ["AutoModel"], "type": "text"}}
