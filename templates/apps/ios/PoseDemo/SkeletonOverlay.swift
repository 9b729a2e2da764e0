import SwiftUI

/// Draws the skeleton over the preview (which fills the view, cropping the frame).
struct SkeletonOverlay: View {
    let pose: Pose?
    let frameWidth: Int
    let frameHeight: Int
    let size: CGSize

    var body: some View {
        Canvas { context, _ in
            guard let pose else {
                return
            }
            let shown = ViewMapping.toView(
                pose,
                frameWidth: frameWidth,
                frameHeight: frameHeight,
                viewWidth: Float(size.width),
                viewHeight: Float(size.height),
                fill: true
            )
            for (a, b) in shown.bones() {
                var line = Path()
                line.move(to: CGPoint(x: CGFloat(a.x), y: CGFloat(a.y)))
                line.addLine(to: CGPoint(x: CGFloat(b.x), y: CGFloat(b.y)))
                context.stroke(line, with: .color(.green), lineWidth: 4)
            }
            for k in shown.keypoints where k.score >= PoseModelConfig.scoreThreshold {
                let dot = CGRect(x: CGFloat(k.x) - 5, y: CGFloat(k.y) - 5, width: 10, height: 10)
                context.fill(Path(ellipseIn: dot), with: .color(.yellow))
            }
        }
    }
}
