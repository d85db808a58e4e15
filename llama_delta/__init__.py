"""llama-delta tools: plots, data builders, training and export. Depends on
`modeling_llama_delta`, never the reverse."""
