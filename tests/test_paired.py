import numpy as np

from shoptune.evaluate.scoring import aggregate, paired_overall_samples, score_questions
from shoptune.schema import parse_example


def test_paired_samples_centre_on_the_scores_and_pair_the_draws():
    rows = [
        parse_example(
            {
                "input_field": f"q{i}",
                "output_field": i % 4,
                "task_name": f"t{i % 3}",
                "track": f"T{i % 3 % 2}",
                "task_type": "multiple-choice",
                "metric": "accuracy",
                "is_multiple_choice": True,
            }
        )
        for i in range(90)
    ]
    truth = [str(i % 4) for i in range(90)]
    better = [t if i % 5 else "9" for i, t in enumerate(truth)]  # wrong on every fifth question
    worse = [t if i % 2 else "9" for i, t in enumerate(truth)]  # wrong on every second question
    a, b = score_questions(rows, better), score_questions(rows, worse)
    samples = paired_overall_samples([a, b], n_bootstrap=500, seed=1)
    assert samples.shape == (2, 500)
    assert abs(samples[0].mean() - aggregate(a, n_bootstrap=0).overall) < 0.02
    diff = samples[0] - samples[1]
    low, high = np.percentile(diff, [2.5, 97.5])
    assert 0 < low < high
    # Paired draws: the difference varies less than it would with independent draws.
    independent = samples[0] - np.random.default_rng(0).permutation(samples[1])
    assert diff.std() < independent.std()
