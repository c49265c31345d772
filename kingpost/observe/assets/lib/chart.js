// A line chart of the last N points on a canvas; enough for a live rate.
export class LineChart {
  constructor(canvas, { points = 60, color = "#2a62d8" } = {}) {
    this.canvas = canvas;
    this.capacity = points;
    this.color = color;
    this.values = [];
  }

  push(value) {
    this.values.push(Number.isFinite(value) ? value : 0);
    if (this.values.length > this.capacity) this.values.shift();
    this.canvas.dataset.points = String(this.values.length);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    const top = Math.max(...this.values, 1e-9) * 1.15;
    const pad = 4 * ratio;
    context.strokeStyle = "#dde1e8";
    context.lineWidth = ratio;
    for (let i = 1; i < 4; i++) {
      const y = pad + ((height - 2 * pad) * i) / 4;
      context.beginPath();
      context.moveTo(0, y);
      context.lineTo(width, y);
      context.stroke();
    }
    if (this.values.length < 2) return;
    const step = (width - 2 * pad) / (this.capacity - 1);
    const start = width - pad - step * (this.values.length - 1);
    const y = (value) => height - pad - ((height - 2 * pad) * value) / top;
    context.beginPath();
    this.values.forEach((value, i) => (i ? context.lineTo(start + i * step, y(value)) : context.moveTo(start, y(value))));
    context.strokeStyle = this.color;
    context.lineWidth = 2 * ratio;
    context.stroke();
    context.lineTo(start + (this.values.length - 1) * step, height - pad);
    context.lineTo(start, height - pad);
    context.closePath();
    context.fillStyle = this.color + "22";
    context.fill();
  }
}
