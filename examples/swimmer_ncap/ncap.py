"""An NCAP swimmer circuit in plain PyTorch (the C. elegans neural circuit architectural prior).

Per joint i there is a dorsal and a ventral B-neuron and a dorsal and a ventral muscle:

* the B-neurons of joint i > 0 are driven by proprioception from joint i − 1 (its angle, scaled
  to [−1, 1] and split into a dorsal part ``clamp(q, 0, 1)`` and a ventral part
  ``−clamp(q, −1, 0)``), through excitatory synapses; the head's B-neurons are driven by an
  oscillator: dorsal for the first half of each ``oscillator_period`` ticks, ventral for the
  second half;
* each muscle is excited by its own side's B-neuron and inhibited by the other side's;
* neurons and muscles are graded (``clamp(x, 0, 1)``); the joint torque is ``m_d − m_v``.

Sign constraints are applied inside ``forward`` (``exc(w) = max(w, 0)``, ``inh(w) = min(w, 0)``),
the wiring is fixed and sparse (each B-neuron sees one sensor, each muscle two B-neurons), and the
only state is the integer ``timestep`` counter. With weight sharing there are four parameters,
initialised to +1, +1, +1, −1.

edgec recognises this interface (``n_joints``, ``oscillator_period``, ``timestep``, ``exc``,
``inh``, ``params``) and compiles the module natively: the constraints fold at compile time and
the counter becomes C state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def graded(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0.0, max=1.0)


class SwimmerModule(nn.Module):
    def __init__(
        self,
        n_joints: int = 6,
        oscillator_period: int = 60,
        use_weight_sharing: bool = True,
        use_weight_constraints: bool = True,
        include_proprioception: bool = True,
        include_head_oscillators: bool = True,
    ):
        super().__init__()
        self.n_joints = n_joints
        self.oscillator_period = oscillator_period
        self.use_weight_sharing = use_weight_sharing
        self.use_weight_constraints = use_weight_constraints
        self.include_proprioception = include_proprioception
        self.include_head_oscillators = include_head_oscillators
        self.angle_scale = 2 * math.pi / (n_joints + 1)
        self.timestep = 0  # a Python int: torch.export would freeze it
        self.params = nn.ParameterDict()

        def param(key: str, value: float) -> None:
            self.params[key] = nn.Parameter(torch.tensor(value))

        if use_weight_sharing:
            param("bneuron_prop", 1.0)
            param("bneuron_osc", 1.0)
            param("muscle_ipsi", 1.0)
            param("muscle_contra", -1.0)
        else:
            for i in range(1, n_joints):
                param(f"bneuron_prop_{i}", 1.0)
            param("bneuron_osc", 1.0)
            for i in range(n_joints):
                param(f"muscle_ipsi_{i}", 1.0)
                param(f"muscle_contra_{i}", -1.0)

    # sign constraints (parametrizations applied inside forward)
    def exc(self, w: torch.Tensor) -> torch.Tensor:
        return w.clamp(min=0.0) if self.use_weight_constraints else w

    def inh(self, w: torch.Tensor) -> torch.Tensor:
        return w.clamp(max=0.0) if self.use_weight_constraints else w

    def _w(self, shared: str, key: str) -> torch.Tensor:
        return self.params[shared] if self.use_weight_sharing else self.params[key]

    def reset(self) -> None:
        self.timestep = 0

    def forward(self, joint_pos: torch.Tensor) -> torch.Tensor:
        q = joint_pos / self.angle_scale
        q_d = q.clamp(min=0.0, max=1.0)
        q_v = q.clamp(min=-1.0, max=0.0).neg()
        phase = self.timestep % self.oscillator_period
        osc_d = 1.0 if phase < self.oscillator_period // 2 else 0.0
        osc_v = 1.0 - osc_d
        torques = []
        for i in range(self.n_joints):
            b_d = torch.zeros_like(q[..., 0])
            b_v = torch.zeros_like(q[..., 0])
            if self.include_proprioception and i > 0:
                w = self.exc(self._w("bneuron_prop", f"bneuron_prop_{i}"))
                b_d = b_d + q_d[..., i - 1] * w
                b_v = b_v + q_v[..., i - 1] * w
            if self.include_head_oscillators and i == 0:
                w = self.exc(self.params["bneuron_osc"])
                b_d = b_d + osc_d * w
                b_v = b_v + osc_v * w
            b_d, b_v = graded(b_d), graded(b_v)
            ipsi = self.exc(self._w("muscle_ipsi", f"muscle_ipsi_{i}"))
            contra = self.inh(self._w("muscle_contra", f"muscle_contra_{i}"))
            m_d = graded(b_d * ipsi + b_v * contra)
            m_v = graded(b_v * ipsi + b_d * contra)
            torques.append(m_d - m_v)
        self.timestep += 1
        return torch.stack(torques, dim=-1)
