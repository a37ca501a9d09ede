"""LoRA multi-task fine-tuning on the Hugging Face stack."""
