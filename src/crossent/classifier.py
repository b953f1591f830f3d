"""``SoftmaxClassifier``: the derivation's L2-regularised linear softmax classifier."""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from crossent._array import is_tensor
from crossent._stats import max_abs
from crossent._threads import check_n_threads, single_threaded_blas
from crossent.objective import LinearSoftmaxObjective
from crossent.softmax import log_softmax, softmax
from crossent.solvers import (
    MINIBATCH,
    SOLVERS,
    Preconditioner,
    Problem,
    SolverResult,
    choose_solver,
    penalty_weight,
)
from crossent.solvers._problem import Callback

__all__ = ["Progress", "SoftmaxClassifier"]

_PREDICT_CHUNK = 8192  # rows per block when predicting
_DTYPES = [np.float64, np.float32]  # X's dtypes kept as they are; others become float64
_TENSOR_CHECK_ROWS = 65536  # rows per block when checking a tensor X for NaN and inf


class Progress(NamedTuple):
    """What a training callback receives after each iteration (epoch)."""

    iteration: int
    loss: float  # L_total (for minibatch solvers: the epoch's mean batch objective × Σ s)
    grad_max: float  # largest |gradient| entry in the solver's coordinates (NaN if unknown)
    coef: np.ndarray  # (n_classes, n_features), the model after this iteration
    intercept: np.ndarray  # (n_classes,)


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """Linear softmax classifier (multinomial logistic regression) with an L2 penalty.

    Conventions
    -----------
    - Objective: ``L_total(W, b) = Σ_i s_i L_i + (λ/2)‖W‖²`` with
      ``L_i = log Σ_j e^{f_{j,i}} − f_{k_i,i}`` and scores ``f_{·,i} = W x_i + b``; ``s_i``
      is ``sample_weight`` times the class weight. Its gradient is
      ``Σ_i s_i (ŷ_i − δ_{k_i}) x_iᵀ + λW`` (see ``docs/derivation.md``).
    - With three or more classes the optimum equals scikit-learn's
      ``LogisticRegression(C=1/λ)`` (multinomial, L2).
    - ``coef_`` is ``W``, shape ``(n_classes, n_features)``; ``intercept_`` is ``b``, shape
      ``(n_classes,)``, not penalised. For two classes both rows are kept and penalised (the
      symmetric parametrisation, ``w₀ = −w₁`` at the optimum), so the model equals
      ``LogisticRegression(C=2/λ)``'s single row ``w₁ − w₀``; ``decision_function`` returns
      that difference, shape ``(n_samples,)``, as scikit-learn does.
    - Solvers minimise ``L_total / Σ_i s_i`` (the same optimum) in coordinates where the
      features are standardised (see :mod:`crossent.solvers._problem`); ``tol`` applies to
      the largest gradient entry there. ``X`` itself is never copied or rescaled.
    - float32 ``X`` stays float32 in the matrix products; sums are accumulated in float64.
      ``predict_proba``, ``predict_log_proba`` and ``decision_function`` return ``X``'s
      dtype (float32 for float32 input, as scikit-learn's ``LogisticRegression``), computed
      from float64 scores.
    - Sparse ``X`` (SciPy CSR/CSC matrices or arrays) is accepted everywhere and never
      densified: only the objective's two matrix products become sparse × dense ones.
    - Scale-free: the preconditioner standardises each feature, so features of any finite
      scale (``X * 1e200``) fit as well as ``X`` itself; the penalty acts on ``W`` as given.
    - PyTorch tensors (CPU or CUDA) are accepted by ``fit`` and the prediction methods. A
      fit on a tensor (or with ``device``) evaluates the objective on the tensor's device
      (:class:`crossent.torch._objective.TorchObjective`); the solvers run on the host in
      float64 and only the ``(C, d)`` weights and gradients cross the bus. ``coef_`` and
      ``intercept_`` are NumPy float64 whatever the input. Predictions on a tensor are
      tensors on its device (``predict``: numeric class labels; string labels come back as
      a NumPy array); on NumPy input, NumPy arrays.

    Parameters
    ----------
    l2 : float, default 1.0
        λ ≥ 0, the penalty weight.
    fit_intercept : bool, default True
    solver : {"auto", "lbfgs", "newton-cg", "gd", "sgd", "adam"}, default "auto"
        Full batch: ``auto`` (``newton-cg`` for data with fewer than 32 stored entries per
        feature, such as sparse text, else ``lbfgs``; see :mod:`crossent.solvers._auto`),
        ``lbfgs`` (L-BFGS), ``newton-cg`` (truncated Newton with Hessian-vector products),
        ``gd`` (gradient descent with line search). Minibatch: ``sgd`` (with momentum),
        ``adam``.
    max_iter : int, default 1000
        Iterations (full batch) or epochs (minibatch).
    tol : float, default 1e-4
        Full batch: gradient tolerance (``max |∂F/∂(W, b)| <= tol``, once an iteration
        lowers ``F`` by at most ``tol`` relative). Minibatch: relative improvement under which an
        epoch counts as no progress (see ``n_iter_no_change``).
    batch_size : int, default 256
        Rows per minibatch (``sgd``, ``adam``, ``partial_fit``).
    learning_rate : float, optional
        Initial step size of the minibatch solvers (default 0.05 for sgd, 0.01 for adam);
        it decays as ``1 / sqrt(1 + epoch / 5)``.
    class_weight : dict, "balanced" or None
        Multiplies each sample's weight by the weight of its class; finite and
        non-negative.
    warm_start : bool, default False
        Start from the previous ``coef_`` and ``intercept_``.
    random_state : int, Generator or None
        Shuffling of the minibatch solvers and the early-stopping split.
    n_jobs : int, optional
        The ``n_threads`` knob of :mod:`crossent._threads`: threads over row blocks of the
        objective (-1: all cores, ``k``: ``k``). None: one thread per 2**25 multiply-adds
        of one evaluation (``n · d · C``), up to all cores. BLAS runs on one thread during
        fitting either way: crossent parallelises over row blocks itself.
    verbose : int, default 0
        Print the objective per iteration when > 0.
    early_stopping : bool, default False
        Minibatch solvers only: hold out ``validation_fraction`` of the data and stop when
        its objective stops improving; the best iterate is kept.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 5
    callback : callable, optional
        ``callback(progress)`` after each iteration (epoch), with a :class:`Progress`
        (iteration, loss = ``L_total``, grad_max, coef, intercept); returning True stops
        training (the model of that iteration is kept, with a ConvergenceWarning).
    distributed : bool, default False
        Fit one model on the rows of all processes of the initialised ``torch.distributed``
        default process group (as ``torchrun`` starts them): each process calls ``fit`` with
        its own rows and all end with the same model, bit for bit, the model of all rows
        together (see :mod:`crossent.distributed`). Full-batch solvers only; the callback
        and ``verbose`` run on every rank.
    device : str or torch.device, optional
        Where ``fit`` evaluates the objective: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a
        ``torch.device`` (NumPy ``X`` is copied there once; a tensor elsewhere is moved
        there). None (the default): on the tensor's device for a tensor ``X``, else with
        NumPy as usual. The torch path needs a full-batch solver (``lbfgs``, ``gd``);
        ``partial_fit`` and ``distributed`` run on NumPy data only.

    Attributes
    ----------
    classes_ : ndarray, shape ``(n_classes,)``
    coef_ : ndarray, shape ``(n_classes, n_features)``
    intercept_ : ndarray, shape ``(n_classes,)``
    n_iter_ : int
    solver_ : str
        The full-batch solver ``fit`` ran: ``solver``, or the one ``"auto"`` chose.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string feature names.
    loss_curve_ : list of float
        ``L_total`` after each iteration (the mean batch objective times ``Σ s`` for the
        minibatch solvers).
    allreduce_seconds_ : float
        Only after a distributed fit: this rank's time in the objective's all-reduces.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from crossent import SoftmaxClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = SoftmaxClassifier(l2=1.0).fit(X / 16, y)
    >>> clf.coef_.shape
    (10, 64)
    >>> bool(clf.score(X / 16, y) > 0.95)
    True
    """

    _parameter_constraints: ClassVar[dict[str, list[Any] | str]] = {
        "l2": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions(set(SOLVERS))],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "callback": [callable, None],
        "distributed": ["boolean"],
        "device": "no_validation",  # checked in fit: see crossent.torch._objective
    }

    def __init__(
        self,
        l2: float = 1.0,
        *,
        fit_intercept: bool = True,
        solver: str = "auto",
        max_iter: int = 1000,
        tol: float = 1e-4,
        batch_size: int = 256,
        learning_rate: float | None = None,
        class_weight: dict | str | None = None,
        warm_start: bool = False,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        callback: Any = None,
        distributed: bool = False,
        device: Any = None,
    ) -> None:
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.callback = callback
        self.distributed = distributed
        self.device = device

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR, CSC (converted to CSR once) and sparse arrays
        return tags

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None) -> SoftmaxClassifier:
        """Minimise ``L_total`` on ``(X, y)``.

        Parameters
        ----------
        X : array-like, scipy.sparse matrix/array or torch.Tensor, ``(n_samples, n_features)``
            Sparse input (CSR; CSC and other formats are converted to CSR once) is never
            densified. A tensor (CPU or CUDA) is fitted on its device (see ``device``).
        y : array-like or torch.Tensor, shape ``(n_samples,)``
            Class labels (integers or strings), at least two distinct.
        sample_weight : array-like or torch.Tensor, shape ``(n_samples,)``, optional
            Non-negative weights ``s_i``.

        Returns
        -------
        self
        """
        self._check_params()
        device = self._fit_device(X)  # None: NumPy; else a torch.device
        if self.distributed:  # this process's rows: the model of all processes' rows
            if device is not None:
                raise ValueError(
                    "distributed=True fits NumPy data only: pass NumPy arrays and device=None"
                )
            from crossent.distributed import fit_shard

            return fit_shard(self, X, y, sample_weight)
        self.__dict__.pop("allreduce_seconds_", None)
        if device is None:
            X, y = validate_data(self, X, y, accept_sparse="csr", dtype=_DTYPES, order="C")
        else:
            X, y, sample_weight = self._validate_device_data(X, y, sample_weight, device)
        largest = max_abs(X)  # one pass; also the objectives' bound of max |x|
        _check_feature_scale(largest, X.shape[0])
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                "SoftmaxClassifier needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0].item()!r}"
            )
        weights = self._sample_weights(X, y, classes, sample_weight)
        self.classes_ = classes
        self._forget_state()  # a later partial_fit continues from this fit
        rng = np.random.default_rng(_seed(self.random_state))
        held_out = None
        if self.early_stopping and self.solver in MINIBATCH:
            X, y_index, weights, held_out = self._split_validation(X, y_index, weights, rng)
        precond = Preconditioner.from_data(
            X,
            weights,
            center=self.fit_intercept,
            l2=float(self.l2),
            penalty_weight=penalty_weight(self.solver, len(classes)),
        )
        objective = self._objective(X, y_index, weights, largest)
        problem = Problem(objective, precond, float(weights.sum()))
        validation = None
        if held_out is not None:
            X_val, y_val, w_val = held_out
            validation = Problem(
                self._objective(X_val, y_val, w_val, largest), precond, float(w_val.sum())
            )
        x0 = self._start(precond, y_index, weights)
        options: dict[str, Any] = {}
        if self.solver in MINIBATCH:
            options = self._minibatch_options(rng, validation)
        result = self._run_solver(problem, precond, x0, **options)
        self._adopt(precond.to_model(result.x, len(classes)), result)
        return self

    def _run_solver(self, problem: Problem, precond: Preconditioner, x0: np.ndarray, **options):
        """The configured solver from ``x0`` on ``problem``, BLAS on one thread."""
        solver: Any = SOLVERS[self.solver]
        self.solver_ = choose_solver(problem) if self.solver == "auto" else self.solver
        with single_threaded_blas():
            return solver(
                problem,
                x0,
                max_iter=self.max_iter,
                tol=self.tol,
                callback=self._progress(precond),
                **options,
            )

    def _adopt(self, model: tuple[np.ndarray, np.ndarray], result: Any) -> None:
        """Take the solver's ``(coef, intercept)`` and its record; warn if not converged."""
        self._set_model(model)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = result.loss_curve
        if not result.converged:
            self._warn_not_converged(result)

    def _forget_state(self) -> None:
        """Drop what a previous fit or partial_fit left, so that a later one starts anew."""
        for stale in ("_solver_state", "_precond", "_x", "_rng", "n_samples_seen_"):
            self.__dict__.pop(stale, None)

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> SoftmaxClassifier:
        """One minibatch pass over ``(X, y)``, continuing from the current model.

        Uses the ``sgd`` or ``adam`` solver (``adam`` when ``solver`` is a full-batch one).
        The penalty is shared out over the samples seen so far: after passes over a data
        set in batches, the model approaches the minimiser of ``L_total`` on the samples
        seen, each counted once per pass.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix/array, shape ``(n_samples, n_features)``
        y : array-like, shape ``(n_samples,)``
        classes : array-like, shape ``(n_classes,)``
            Every class that will ever appear; required on the first call.
        sample_weight : array-like, shape ``(n_samples,)``, optional

        Returns
        -------
        self
        """
        if self.distributed:
            raise ValueError(
                "partial_fit is not distributed (it runs the minibatch solvers): use fit "
                "with solver='lbfgs' or 'gd' and distributed=True"
            )
        if self.device is not None or is_tensor(X):
            raise ValueError(
                "partial_fit runs the minibatch solvers on NumPy data only: pass NumPy "
                "arrays with device=None, or use fit with solver='lbfgs' or 'gd' on the device"
            )
        first = not hasattr(self, "classes_")
        resuming_fit = not first and not hasattr(self, "_solver_state")  # after fit()
        if first:
            self._validate_params()
            self._check_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            classes = np.unique(np.asarray(classes))
            if classes.shape[0] < 2:
                raise ValueError("partial_fit needs at least 2 classes in `classes`")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"`classes`={np.unique(classes)!r} differs from the classes of the first call "
                f"{self.classes_!r}"
            )
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=_DTYPES, order="C", reset=first)
        largest = max_abs(X)  # one pass; also the objective's bound of max |x|
        _check_feature_scale(largest, X.shape[0])
        check_classification_targets(y)
        known = classes if first else self.classes_
        unseen = np.setdiff1d(np.unique(y), known)
        if unseen.size:
            raise ValueError(f"y contains labels {unseen!r} not in classes {known!r}")
        y_index = np.searchsorted(known, y)
        weights = self._sample_weights(X, y, known, sample_weight)
        if first or resuming_fit:
            self.classes_ = known
            self._precond = Preconditioner.from_data(
                X, weights, center=self.fit_intercept, l2=float(self.l2)
            )
            if resuming_fit:  # continue from the fitted model
                self._x = self._precond.from_model(self.coef_, self.intercept_)
            else:
                self._x = self._start(self._precond, y_index, weights)
            self._solver_state: dict[str, Any] = {}
            self._rng = np.random.default_rng(_seed(self.random_state))
            self.n_samples_seen_ = 0.0
            self.loss_curve_ = []
            self.n_iter_ = 0
        self.n_samples_seen_ += float(weights.sum())
        objective = self._objective(X, y_index, weights, largest)
        problem = Problem(objective, self._precond, self.n_samples_seen_)
        method = self.solver if self.solver in MINIBATCH else "adam"
        solver: Any = SOLVERS[method]
        with single_threaded_blas():
            result = solver(
                problem,
                self._x,
                max_iter=1,
                tol=self.tol,
                callback=self._progress(self._precond),
                **self._minibatch_options(self._rng, None, state=self._solver_state),
            )
        self._x = result.x
        self._set_model(self._precond.to_model(result.x, len(self.classes_)))
        self.n_iter_ += result.n_iter
        self.loss_curve_.extend(result.loss_curve)
        return self

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X) -> Any:
        """Scores ``f = X Wᵀ + b``, shape ``(n_samples, n_classes)``, in ``X``'s dtype.

        For two classes, scikit-learn's convention: the score of ``classes_[1]`` against
        ``classes_[0]``, ``f₁ − f₀``, shape ``(n_samples,)``.
        """
        scores, dtype = self._scores(X)
        if scores.shape[1] == 2:
            scores = scores[:, 1] - scores[:, 0]
        return _cast(scores, dtype)

    def predict(self, X) -> Any:
        """The class of highest score for each row, shape ``(n_samples,)``.

        For a tensor ``X``: a tensor on its device when the classes are numbers, else a
        NumPy array of the labels.
        """
        scores, _ = self._scores(X)  # checks that the model is fitted first
        if is_tensor(scores):
            best = scores.argmax(dim=1)  # (n,) on X's device
            if self.classes_.dtype.kind in "biuf":
                import torch

                return torch.as_tensor(self.classes_).to(best.device)[best]
            return self.classes_[best.cpu().numpy()]
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X) -> Any:
        """``softmax(X Wᵀ + b)``, shape ``(n_samples, n_classes)``, in ``X``'s dtype (and
        array type: a tensor on its device for a tensor ``X``)."""
        scores, dtype = self._scores(X)
        return _cast(softmax(scores), dtype)

    def predict_log_proba(self, X) -> Any:
        """``log_softmax(X Wᵀ + b)``, computed from the scores (never ``log(proba)``)."""
        scores, dtype = self._scores(X)
        return _cast(log_softmax(scores), dtype)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of :meth:`predict` on ``(X, y)`` (tensors: compared on the host,
        where only the labels travel)."""
        from sklearn.metrics import accuracy_score

        predicted = _to_host(self.predict(X))
        return float(accuracy_score(_to_host(y), predicted, sample_weight=_to_host(sample_weight)))

    def _scores(self, X) -> tuple[Any, Any]:
        """``(X Wᵀ + b, X's dtype)``: float64 scores ``(n_samples, n_classes)``, in row blocks.

        The products run in float64 whatever ``X``'s dtype (float32 weights of a model fitted
        on features of scale 1e37 would be subnormal); callers cast the result back. For a
        tensor ``X`` the scores are a tensor on its device.
        """
        check_is_fitted(self)
        if is_tensor(X):
            return self._tensor_scores(X)
        X = validate_data(self, X, accept_sparse="csr", dtype=_DTYPES, reset=False)
        scores = np.empty((X.shape[0], self.coef_.shape[0]), dtype=np.float64)  # (n, C)
        coef_t = np.ascontiguousarray(self.coef_.T)  # (d, C): read as is by sparse products
        with np.errstate(over="ignore", invalid="ignore"):  # reported just below
            for start in range(0, X.shape[0], _PREDICT_CHUNK):
                block = slice(start, start + _PREDICT_CHUNK)
                scores[block] = X[block].astype(np.float64, copy=False) @ coef_t + self.intercept_
        if not np.isfinite(scores).all():  # X and the model are finite: the product overflowed
            raise ValueError(
                f"the scores X Wᵀ + b overflow float64 for this model: the feature scale is too "
                f"large (max |X| = {max_abs(X):.3g}, max |coef_| = "
                f"{float(np.max(np.abs(self.coef_))):.3g}); rescale X as it was for fit"
            )
        return scores, X.dtype

    def _tensor_scores(self, X) -> tuple[Any, Any]:
        """:meth:`_scores` of a tensor ``X``, computed on its device."""
        import torch

        X = self._check_tensor(X, reset=False)
        coef_t = torch.from_numpy(np.ascontiguousarray(self.coef_.T)).to(X.device)  # (d, C)
        intercept = torch.from_numpy(np.asarray(self.intercept_, dtype=np.float64)).to(X.device)
        scores = torch.empty((X.shape[0], coef_t.shape[1]), dtype=torch.float64, device=X.device)
        for start in range(0, X.shape[0], _PREDICT_CHUNK):
            block = slice(start, start + _PREDICT_CHUNK)
            scores[block] = X[block].to(torch.float64) @ coef_t + intercept
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(
                f"the scores X Wᵀ + b overflow float64 for this model: the feature scale is too "
                f"large (max |X| = {max_abs(X):.3g}, max |coef_| = "
                f"{float(np.max(np.abs(self.coef_))):.3g}); rescale X as it was for fit"
            )
        return scores, X.dtype

    # ------------------------------------------------------------------ torch input
    def _fit_device(self, X) -> Any:
        """The torch.device ``fit`` runs on (``device``, else a tensor's own), or None."""
        if self.device is not None:
            from crossent.torch._objective import resolve_device

            device = resolve_device(self.device)
        elif is_tensor(X):
            device = X.device
        else:
            return None
        if self.solver in MINIBATCH:
            raise ValueError(
                f"solver={self.solver!r} runs on NumPy data only: with torch tensors or "
                "device= use a full-batch solver ('lbfgs' or 'gd')"
            )
        return device

    def _validate_device_data(self, X, y, sample_weight, device) -> tuple[Any, Any, Any]:
        """``(X on device, y and sample_weight as NumPy)`` checked as ``validate_data`` does."""
        import torch

        if is_tensor(X):
            X = self._check_tensor(X, reset=True).to(device)
        elif issparse(X):
            raise TypeError(
                f"device={self.device!r} needs dense X; sparse X is fitted with NumPy on the "
                "host (device=None), where it is never densified"
            )
        else:  # NumPy or array-like (dense): checked on the host, copied once to the device
            X = validate_data(self, X, dtype=_DTYPES, order="C")
            X = torch.from_numpy(X).to(device)
        y = column_or_1d(_to_host(y), warn=True)
        check_consistent_length(X, y)
        return X, y, _to_host(sample_weight)

    def _check_tensor(self, X, *, reset: bool) -> Any:
        """A tensor ``X`` checked as ``validate_data`` checks arrays: 2-D, real, finite,
        float32/float64 kept (other dtypes become float64), the feature count recorded
        (``reset``) or compared with the fitted one."""
        import torch

        X = X.detach()
        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2-D tensor X of shape (n_samples, n_features), got shape "
                f"{tuple(X.shape)}"
            )
        if X.is_complex():
            raise ValueError(f"Complex data not supported: X has dtype {X.dtype}")
        if X.dtype not in (torch.float32, torch.float64):
            X = X.to(torch.float64)
        n, d = X.shape
        if n < 1 or d < 1:
            raise ValueError(
                f"Found array with {n} sample(s) and {d} feature(s) (shape {tuple(X.shape)}) "
                "while a minimum of 1 of each is required by SoftmaxClassifier."
            )
        blocks = range(0, n, _TENSOR_CHECK_ROWS)
        finite = [torch.isfinite(X[k : k + _TENSOR_CHECK_ROWS]).all() for k in blocks]
        if not bool(torch.stack(finite).all()):
            raise ValueError("Input X contains NaN or infinity.")
        if reset:
            self.n_features_in_ = int(d)
            self.__dict__.pop("feature_names_in_", None)
        elif d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but SoftmaxClassifier is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X.contiguous()

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        """What ``_parameter_constraints`` cannot say: no NaN, and finite where it matters."""
        for name in ("l2", "tol", "learning_rate", "validation_fraction"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        check_n_threads(self.n_jobs, "n_jobs")

    def _sample_weights(self, X, y, classes, sample_weight, class_counts=None) -> np.ndarray:
        """``sample_weight`` times the class weights, float64 ``(n_samples,)``.

        ``class_counts`` (a distributed fit): the rows per class over all ranks, which
        ``class_weight="balanced"`` then uses; the caller has checked ``sample_weight`` (a
        float64 array: a shard may have no rows, or only zero weights) and checks the total
        over all ranks.
        """
        if class_counts is None:
            weights = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True
            )
        else:
            weights = np.asarray(sample_weight, dtype=np.float64)
        if class_counts is not None and self.class_weight == "balanced":
            per_class = class_counts.sum() / (len(classes) * class_counts)
            return weights * per_class[np.searchsorted(classes, y)]
        if self.class_weight is not None:
            if isinstance(self.class_weight, dict):
                missing = set(self.class_weight) - set(classes.tolist())
                if missing:
                    raise ValueError(f"class_weight names classes not in the data: {missing}")
                _check_class_weight(self.class_weight)
            per_class = compute_class_weight(self.class_weight, classes=classes, y=y)
            weights = weights * per_class[np.searchsorted(classes, y)]
        if class_counts is None and not weights.sum() > 0:
            raise ValueError("the sample weights sum to zero: there is nothing to fit")
        return weights

    def _objective(self, X, y_index, weights, x_max_abs: float) -> Any:
        """The objective on ``X``: on its device for a tensor (the torch kernel).

        ``x_max_abs`` bounds ``max |x|`` (that of all the data when ``X`` is a part of it).
        """
        objective: Any = LinearSoftmaxObjective
        if is_tensor(X):
            from crossent.torch._objective import TorchObjective as objective
        return objective(
            X,
            y_index,
            len(self.classes_),
            l2=float(self.l2),
            sample_weight=weights,
            fit_intercept=self.fit_intercept,
            n_threads=self.n_jobs,
            x_max_abs=x_max_abs,
        )

    def _start(self, precond: Preconditioner, y_index, weights, class_totals=None) -> np.ndarray:
        """Warm start, else ``W = 0`` and ``b`` = log class frequencies (the best constant).

        ``class_totals``: the weighted rows per class over all ranks (a distributed fit).
        """
        n_classes = len(self.classes_)
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape[0] == n_classes:
            if self.coef_.shape[1] == precond.scale.shape[0]:
                return precond.from_model(self.coef_, self.intercept_)
        coef = np.zeros((n_classes, precond.scale.shape[0]))
        intercept = np.zeros(n_classes)
        if self.fit_intercept:
            counts = np.bincount(y_index, weights=weights, minlength=n_classes)
            if class_totals is not None:
                counts = class_totals
            intercept = np.log(np.maximum(counts, 1e-12) / counts.sum())
            intercept -= intercept.mean()
        return precond.from_model(coef, intercept)

    def _split_validation(self, X, y_index, weights, rng):
        n = X.shape[0]
        n_val = max(1, round(self.validation_fraction * n))
        if n - n_val < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no rows")
        order = rng.permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        return X[train], y_index[train], weights[train], (X[val], y_index[val], weights[val])

    def _minibatch_options(self, rng, validation, state=None) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "random_state": rng,
            "n_iter_no_change": self.n_iter_no_change,
            "validation": validation,
            "state": state,
        }

    def _progress(self, precond: Preconditioner) -> Callback:
        """The solver callback: prints when verbose, and calls the user's callback."""
        n_classes = len(self.classes_)

        def report(iteration: int, loss: float, grad_max: float, x: np.ndarray) -> bool:
            if self.verbose:
                print(f"iter {iteration:5d}  L_total {loss:.10g}  max|grad| {grad_max:.3g}")
            if self.callback is None:
                return False
            coef, intercept = precond.to_model(x, n_classes)
            if not self.fit_intercept:
                intercept = np.zeros_like(intercept)
            return bool(self.callback(Progress(iteration, loss, grad_max, coef, intercept)))

        return report

    def _set_model(self, model: tuple[np.ndarray, np.ndarray]) -> None:
        coef, intercept = model
        self.coef_ = np.ascontiguousarray(coef)
        self.intercept_ = intercept if self.fit_intercept else np.zeros_like(intercept)

    def _warn_not_converged(self, result: SolverResult) -> None:
        unit = "epochs" if self.solver in MINIBATCH else "iterations"
        if result.stopped:
            what = f"was stopped by the callback after {result.n_iter} {unit}"
        else:
            what = f"did not converge in max_iter={self.max_iter} {unit} ({result.message})"
        warnings.warn(
            f"SoftmaxClassifier (solver={self.solver!r}) {what}; the model is not at the "
            f"optimum. Increase max_iter, loosen tol (now {self.tol:g}), or raise l2 "
            f"(now {self.l2:g}).",
            ConvergenceWarning,
            stacklevel=3,
        )


def _to_host(x: Any) -> Any:
    """A tensor as a NumPy array on the host; anything else unchanged."""
    return x.detach().cpu().numpy() if is_tensor(x) else x


def _cast(values: Any, dtype: Any) -> Any:
    """``values`` in ``dtype``, in their own array type (NumPy: no copy when it is)."""
    return values.to(dtype) if is_tensor(values) else values.astype(dtype, copy=False)


def _seed(random_state: Any) -> Any:
    """A seed for ``np.random.default_rng`` from scikit-learn's random_state forms."""
    if isinstance(random_state, np.random.RandomState):
        return random_state.randint(np.iinfo(np.int32).max)
    return random_state


def _check_class_weight(class_weight: dict) -> None:
    """Refuse a class weight that is not a finite number >= 0, naming ``class_weight``."""
    for label, value in class_weight.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"class_weight must map classes to numbers; class {label!r} has {value!r}"
            ) from None
        if not (math.isfinite(number) and number >= 0):
            raise ValueError(
                f"class_weight must be finite and non-negative (as sample_weight is); "
                f"class {label!r} has weight {value!r}"
            )


def _check_feature_scale(largest: float, n_samples: int, where: str = "") -> float:
    """Refuse features so large that sums over the samples overflow float64; return
    ``largest`` (``max |x|``, e.g. from :func:`crossent._stats.max_abs`).

    The preconditioner makes the fit scale-free, but the gradient ``Σ_i s_i (ŷ_i − δ) x_iᵀ``
    is still summed in float64: ``n_samples · max |x|`` must stay below its range (features
    up to about 1e300 for a million samples fit). ``where`` qualifies the numbers in the
    message (" over all ranks").
    """
    if largest * max(n_samples, 1) * 16.0 > float(np.finfo(np.float64).max):
        raise ValueError(
            f"the feature scale is too large: max |X| = {largest:.3g}{where}, and sums over "
            f"{n_samples} samples would overflow float64; rescale the features "
            "(e.g. divide X by a power of ten)"
        )
    return largest
