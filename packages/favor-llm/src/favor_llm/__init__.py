"""favor_llm."""
