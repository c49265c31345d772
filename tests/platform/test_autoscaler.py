"""The autoscaling decision of PLATFORM.md, step by step on a made-up clock."""

from __future__ import annotations

from kingpost.platform.autoscaler import Autoscaler
from kingpost.platform.settings import Autoscaling


def scaler(**settings: float) -> Autoscaler:
    return Autoscaler(Autoscaling(**settings))  # type: ignore[arg-type]


def test_desired_replicas_is_the_average_over_target_times_utilisation() -> None:
    auto = scaler(max_replica=10, concurrency_target=2, target_utilization_percentage=50)
    auto.observe(0.0, 3)
    assert auto.decide(0.0, 1) == 3  # ceil(3 / (2 x 0.5))


def test_scaling_up_is_capped_at_max_replica_and_applies_at_once() -> None:
    auto = scaler(max_replica=3)
    auto.observe(0.0, 4)
    assert auto.decide(0.0, 1) == 3


def test_the_average_is_over_the_window() -> None:
    auto = scaler(max_replica=10, autoscaling_window=10, target_utilization_percentage=100)
    auto.observe(0.0, 8)
    auto.observe(5.0, 0)
    assert auto.average == 4
    auto.observe(11.0, 0)  # the first sample left the window
    assert auto.average == 0


def test_scaling_down_waits_the_delay_then_removes_half_the_excess() -> None:
    auto = scaler(max_replica=8, autoscaling_window=1, scale_down_delay=10)
    auto.observe(0.0, 0)
    assert auto.decide(0.0, 8) == 8  # low load starts counting
    assert auto.decide(9.0, 8) == 8
    assert auto.decide(10.0, 8) == 4  # half of the excess of 8
    assert auto.decide(15.0, 4) == 4  # and a full delay again
    assert auto.decide(20.0, 4) == 2
    assert auto.decide(30.0, 2) == 1
    assert auto.decide(40.0, 1) == 0  # min_replica 0: scale to zero


def test_load_coming_back_resets_the_scale_down_clock() -> None:
    auto = scaler(max_replica=4, autoscaling_window=1, scale_down_delay=10)
    auto.observe(0.0, 0)
    auto.decide(0.0, 2)
    auto.observe(5.0, 1)
    auto.observe(5.5, 1)
    assert auto.decide(5.5, 2) == 2
    auto.observe(7.0, 0)
    assert auto.decide(7.0, 2) == 2
    assert auto.decide(16.0, 2) == 2  # counted from 7.0, not 0.0
    assert auto.decide(17.0, 2) == 1


def test_min_replica_is_kept_without_load_and_parked_requests_wake_from_zero() -> None:
    auto = scaler(min_replica=1, max_replica=2)
    assert auto.decide(0.0, 0) == 1
    zero = scaler()
    zero.observe(0.0, 1)  # one parked request
    assert zero.decide(0.0, 0) == 1


def test_a_floor_and_ceiling_bound_the_decision_during_a_promotion() -> None:
    auto = scaler(max_replica=5)
    auto.floor = 3
    assert auto.decide(0.0, 0) == 3
    auto.floor, auto.ceiling = None, 1
    auto.observe(0.0, 10)
    assert auto.decide(0.0, 3) == 1
