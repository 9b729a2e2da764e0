import SwiftUI

/// Draws every person's skeleton over the preview (which fills the view, cropping the frame),
/// one colour per person.
struct SkeletonOverlay: View {
    let people: [Pose]
    let frameWidth: Int
    let frameHeight: Int
    let size: CGSize

    /// Bone colours, one per person in the order the model lists them (the first: green).
    static let personColors: [Color] = [.green, .cyan, .pink, .red, .blue, .white]

    var body: some View {
        Canvas { context, _ in
            for (i, pose) in people.enumerated() {
                let shown = ViewMapping.toView(
                    pose,
                    frameWidth: frameWidth,
                    frameHeight: frameHeight,
                    viewWidth: Float(size.width),
                    viewHeight: Float(size.height),
                    fill: true
                )
                let color = Self.personColors[i % Self.personColors.count]
                for (a, b) in shown.bones() {
                    var line = Path()
                    line.move(to: CGPoint(x: CGFloat(a.x), y: CGFloat(a.y)))
                    line.addLine(to: CGPoint(x: CGFloat(b.x), y: CGFloat(b.y)))
                    context.stroke(line, with: .color(color), lineWidth: 4)
                }
                for k in shown.keypoints where k.score >= PoseModelConfig.scoreThreshold {
                    let dot = CGRect(x: CGFloat(k.x) - 5, y: CGFloat(k.y) - 5, width: 10, height: 10)
                    context.fill(Path(ellipseIn: dot), with: .color(.yellow))
                }
            }
        }
    }
}
