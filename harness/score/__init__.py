"""Score: reading the letter out of a response (`parsing`, `judge`, `extract`), the official and
robust scorers and the paper's pooled accuracies (`scoring`), and their statistics (`stats`)."""
