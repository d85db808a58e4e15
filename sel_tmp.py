import torch, sys
from transformers import AutoTokenizer
from modeling_llama_delta import LlamaDeltaForAlgorithmicQA
from data_builders import load_task
ck = sys.argv[1]
m = LlamaDeltaForAlgorithmicQA.from_pretrained(ck).eval()
tok = AutoTokenizer.from_pretrained(ck)
ds = load_task('all', cache_dir='/tmp/dcache', examples_per_task=2000, ood_examples=100)['validation'].shuffle(seed=0).select(range(16))
b = tok(list(ds['question']), return_tensors='pt', padding=True)
with torch.no_grad():
    out = m(**b)
names = list(m.config.delta_programs)
for q, p, sel in zip(ds['question'], ds['program'], out.selection):
    top = sel.topk(3)
    print(f"{p:10s} {[ (names[i], round(float(v),3)) for v,i in zip(top.values, top.indices)]}  {q[:60]!r}")
details = m.solve(list(ds['question']), tok, return_details=True, refuse=False)
for d, a in zip(details, ds['answer']): print(d['program'], repr(d['answer']), repr(a), d['refusal'] and d['refusal'][-80:])
